#!/usr/bin/env bash
# Replicated image store figures (issue 19), measured on this machine (not a
# test; prints numbers): two controller replicas A and B on one PostgreSQL
# database, each with its own image store; a 450 MB qcow2 image is uploaded
# through A, then
#   1. fetched through B at once, as an agent of B would (B fetches it from A,
#      checks its SHA-256, keeps it and serves it): time to the last byte;
#   2. a second one is left to B's replication worker (a pass every 10 s):
#      time until B holds its verified copy.
#
#   KUMO_TEST_POSTGRES_URL=postgres://... scripts/replica-figures.sh [release]
#
# Needs the binaries (cargo build -p kumo-api -p kumo-cli [--release]) and a
# PostgreSQL server whose URL names a database to connect to (a new database is
# made next to it and dropped at the end). SIZE_MB overrides the size.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROFILE=${1:-debug}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
SIZE_MB=${SIZE_MB:-450}
BASE=${KUMO_TEST_POSTGRES_URL:?set KUMO_TEST_POSTGRES_URL}
WORK=$(mktemp -d /var/tmp/kumo-replica-figures.XXXXXX)
DBNAME=kumo_fig_$$
DB=${BASE%/*}/$DBNAME
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$BASE" -q -c "DROP DATABASE IF EXISTS $DBNAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 300); do curl -fs "$1/healthz" >/dev/null && return; sleep 0.2; done; echo "$1 never came up" >&2; exit 1; }

psql "$BASE" -q -c "CREATE DATABASE $DBNAME"
start() { # name port
  local dir=$WORK/$1
  mkdir -p "$dir"
  cat >"$WORK/$1.toml" <<EOF
listen = '127.0.0.1:$2'
data_dir = '$dir'
database_url = '$DB'
admin_password = 'figures-admin-pass'
join_token = 'figures-join'
image_store = 'replicated'
replica_url = 'http://127.0.0.1:$2'
EOF
  KUMO_LOG=info "$BIN/kumo-api" --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$2"
}
PA=$(port) PB=$(port)
A=http://127.0.0.1:$PA B=http://127.0.0.1:$PB
start a "$PA"
mkdir -p "$WORK/b" && cp "$WORK/a/sealing.key" "$WORK/b/sealing.key"
start b "$PB"

echo "== $PROFILE binaries; a $SIZE_MB MB qcow2 of random data"
head -c "${SIZE_MB}M" /dev/urandom >"$WORK/big.raw"
qemu-img convert -f raw -O qcow2 "$WORK/big.raw" "$WORK/big.qcow2"
rm "$WORK/big.raw"
BYTES=$(stat -c %s "$WORK/big.qcow2")
export KUMO_CONFIG=$WORK/cli.toml
"$BIN/kumo" login --endpoint "$A" --username admin --password figures-admin-pass >/dev/null
# A host registered through B, to download as an agent does.
HOST_TOKEN=$(curl -fs -H 'content-type: application/json' "$B/agent/v1/register" -d '{"join_token":"figures-join",
  "name":"figures","agent_url":"http://127.0.0.1:9","capacity":{"vcpus":2,"memory_mib":4096,"disk_gib":100},
  "hypervisor":"qemu","availability_zone":"zone-1","volume_backends":["local"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')

upload() { # name -> image id
  "$BIN/kumo" --output json image upload --name "$1" "$WORK/big.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

t0=$(now); ID1=$(upload big-1); t1=$(now)
echo "upload of $BYTES bytes through A: $(secs "$t0" "$t1") s"
# For comparison: A serving the copy it holds.
ta=$(now)
curl -fs -o /dev/null -H "authorization: Bearer $HOST_TOKEN" "$A/agent/v1/images/$ID1/files/disk"
echo "0. A serving its own copy to an agent: $(secs "$ta" "$(now)") s"
t1=$(now)
curl -fs -o "$WORK/got" -H "authorization: Bearer $HOST_TOKEN" "$B/agent/v1/images/$ID1/files/disk"
t2=$(now)
[[ $(stat -c %s "$WORK/got") == "$BYTES" ]] || { echo "B served a file of the wrong size" >&2; exit 1; }
rm "$WORK/got"
echo "1. on demand: B fetched it from A, verified, kept and served it in $(secs "$t1" "$t2") s"

ID2=$(upload big-2); t3=$(now)
until [[ -f $WORK/b/images/$ID2/disk ]]; do
  [[ $(secs "$t3" "$(now)" | cut -d. -f1) -lt 300 ]] || { echo "B never got a copy" >&2; exit 1; }
  sleep 0.2
done
t4=$(now)
echo "2. replication worker: B held a verified copy $(secs "$t3" "$t4") s after the upload ended (passes every 10 s)"
