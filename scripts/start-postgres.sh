#!/usr/bin/env bash
# Initialise (if needed) and start a private PostgreSQL 15 server by hand
# (no systemd, no Debian cluster tools), then create the `kumo` database.
#
#   scripts/start-postgres.sh DATADIR PORT
#
# Listens on 127.0.0.1:PORT and a unix socket in DATADIR only; trust auth for
# local connections; superuser `postgres`. Idempotent: if the server is
# already running on PORT it only makes sure `kumo` exists.
# Prints the URL on stdout (last line); progress goes to stderr, so
#   DATABASE_URL=$(scripts/start-postgres.sh /tmp/pg 55432)
# Env: PG_BINDIR (default /usr/lib/postgresql/15/bin), PG_START_TIMEOUT (s, default 60).
set -euo pipefail

die() { echo "start-postgres: ERROR: $*" >&2; exit 1; }
log() { echo "start-postgres: $*" >&2; }
[[ $# -eq 2 ]] || die "usage: $0 DATADIR PORT"
if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then die "bad port: $2"; fi
PORT=$2
BIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
TIMEOUT=${PG_START_TIMEOUT:-60}
[[ -x $BIN/initdb && -x $BIN/pg_ctl ]] || die "PostgreSQL 15 not found in $BIN (run scripts/install-system-deps.sh)"

mkdir -p "$1"
DATADIR=$(cd "$1" && pwd -P)
# unix socket path limit is 107 bytes
SOCK="$DATADIR/.s.PGSQL.$PORT"
((${#SOCK} <= 107)) || die "socket path too long (${#SOCK} > 107 bytes): $SOCK; use a shorter DATADIR"

# Run PostgreSQL tools as `postgres` when we are root (they refuse to run as root).
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || die "user postgres missing (install the postgresql package)"
  chown postgres: "$DATADIR"
  AS=(runuser -u postgres --)
  "${AS[@]}" test -x "$DATADIR" || die "user postgres cannot reach $DATADIR (a parent directory is not traversable)"
else
  AS=()
fi
chmod 700 "$DATADIR"
pg() { "${AS[@]}" "$@"; }

if [[ ! -s $DATADIR/PG_VERSION ]]; then
  [[ -z "$(ls -A "$DATADIR")" ]] || die "$DATADIR is neither empty nor a PostgreSQL data directory"
  log "initdb $DATADIR"
  pg "$BIN/initdb" -D "$DATADIR" -U postgres -A trust -E UTF8 --no-locale >"$DATADIR.initdb.log" 2>&1 ||
    { cat "$DATADIR.initdb.log" >&2; die "initdb failed"; }
  rm -f "$DATADIR.initdb.log"
fi

if pg "$BIN/pg_ctl" -D "$DATADIR" status >/dev/null 2>&1; then
  # postmaster.pid line 4 is the port it listens on
  running_port=$(sed -n 4p "$DATADIR/postmaster.pid" 2>/dev/null || true)
  [[ $running_port == "$PORT" ]] || die "server in $DATADIR already running on port $running_port, not $PORT"
  log "already running on port $PORT"
else
  log "starting on 127.0.0.1:$PORT"
  opts="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories='$DATADIR'"
  pg "$BIN/pg_ctl" -D "$DATADIR" -l "$DATADIR/server.log" -o "$opts" -w -t "$TIMEOUT" start >/dev/null ||
    { tail -n 20 "$DATADIR/server.log" >&2 || true; die "pg_ctl start failed (log: $DATADIR/server.log)"; }
fi

# Wait until it accepts connections (pg_ctl -w already did; belt and braces).
deadline=$((SECONDS + TIMEOUT))
until pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres; do
  ((SECONDS < deadline)) || die "server not ready on 127.0.0.1:$PORT after ${TIMEOUT}s (log: $DATADIR/server.log)"
  sleep 0.2
done

PSQL=(pg "$BIN/psql" -X -q -h "$DATADIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
if [[ "$("${PSQL[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'kumo'")" != 1 ]]; then
  log "creating database kumo"
  "${PSQL[@]}" -c "CREATE DATABASE kumo"
fi
echo "postgres://postgres@127.0.0.1:$PORT/kumo"
