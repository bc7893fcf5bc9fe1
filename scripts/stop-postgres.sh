#!/usr/bin/env bash
# Stop a server started by scripts/start-postgres.sh (fast shutdown).
#
#   scripts/stop-postgres.sh DATADIR
#
# Idempotent: succeeds if the server is not running or DATADIR is gone.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DATADIR" >&2; exit 1; }
BIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
if [[ ! -f $1/PG_VERSION ]]; then
  echo "stop-postgres: no data directory at $1, nothing to stop" >&2
  exit 0
fi
DATADIR=$(cd "$1" && pwd -P)
AS=()
[[ $(id -u) -ne 0 ]] || AS=(runuser -u postgres --)

if ! "${AS[@]}" "$BIN/pg_ctl" -D "$DATADIR" status >/dev/null 2>&1; then
  echo "stop-postgres: not running ($DATADIR)" >&2
  exit 0
fi
"${AS[@]}" "$BIN/pg_ctl" -D "$DATADIR" -m fast -w -t 60 stop >/dev/null
echo "stop-postgres: stopped ($DATADIR)" >&2
