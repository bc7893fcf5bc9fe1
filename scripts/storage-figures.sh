#!/usr/bin/env bash
# Storage figures, measured on this machine (not a test; prints numbers):
#   1. image upload throughput through the API and the CLI, against a plain `cp`
#      (+ sync) of the same 1 GiB file on the same disk;
#   2. time to create an instance disk from a cached image, and the offline
#      snapshot of a 1 GiB volume full of data (storage/examples/figures.rs);
#   3. the live snapshot of a 1 GiB disk a running guest has attached (the
#      libvirt backup job the agent uses), timed from backup-begin to completion.
#
#   scripts/storage-figures.sh [WORKDIR]     (default: a new directory under /var/tmp)
#
# Needs the workspace binaries (cargo build --workspace --bins), libvirtd
# (scripts/start-libvirt.sh) and the tiny image (KUMO_TEST_IMAGE_DIR, default
# /var/lib/kumo/tiny-image; built by scripts/build-tiny-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
IMAGE_DIR=${KUMO_TEST_IMAGE_DIR:-/var/lib/kumo/tiny-image}
WORK=${1:-$(mktemp -d /var/tmp/kumo-figures.XXXXXX)}
mkdir -p "$WORK"
API_PID=
DOMAIN=kumo-figures-$$
cleanup() {
  [[ -n $API_PID ]] && kill "$API_PID" 2>/dev/null || true
  virsh -q -c qemu:///system destroy "$DOMAIN" >/dev/null 2>&1 || true
  virsh -q -c qemu:///system undefine "$DOMAIN" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v bytes="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", bytes / 1e6 / (b - a) }'; }
GIB=1073741824

echo "== 1. image upload vs cp (1 GiB, $(df --output=source "$WORK" | tail -1))"
head -c $GIB /dev/urandom >"$WORK/big.raw"
qemu-img convert -f raw -O qcow2 "$WORK/big.raw" "$WORK/big.qcow2"
QCOW2_BYTES=$(stat -c %s "$WORK/big.qcow2")
sync
t0=$(now); cp "$WORK/big.raw" "$WORK/copy.raw"; sync; t1=$(now)
echo "cp + sync:                       $(secs "$t0" "$t1") s  $(mbps $GIB "$t0" "$t1") MB/s"
rm -f "$WORK/copy.raw"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/controller.toml" <<EOF
listen = '127.0.0.1:$PORT'
data_dir = '$WORK/controller'
admin_password = 'figures-pass'
join_token = 'figures-join'
EOF
"$BIN/kumo-api" --config "$WORK/controller.toml" >"$WORK/controller.log" 2>&1 &
API_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
export KUMO_CONFIG=$WORK/cli.toml
"$BIN/kumo" login --endpoint "http://127.0.0.1:$PORT" --username admin --password figures-pass >/dev/null
sync
t0=$(now); "$BIN/kumo" image upload "$WORK/big.raw" --name big-raw --format raw >/dev/null; t1=$(now)
echo "kumo image upload (raw):         $(secs "$t0" "$t1") s  $(mbps $GIB "$t0" "$t1") MB/s (stream, SHA-256, fsync, inspection)"
t0=$(now); "$BIN/kumo" image upload "$WORK/big.qcow2" --name big-qcow2 >/dev/null; t1=$(now)
echo "kumo image upload (qcow2, $((QCOW2_BYTES >> 20)) MiB): $(secs "$t0" "$t1") s  $(mbps "$QCOW2_BYTES" "$t0" "$t1") MB/s (format detected; qemu-img info + check included)"
kill "$API_PID"; API_PID=
rm -rf "$WORK/controller" "$WORK/big.qcow2"

echo "== 2. instance disk and offline volume snapshot (storage crate)"
cargo run -q --release -p kumo-storage --example figures -- "$WORK"

echo "== 3. live snapshot of a 1 GiB disk attached to a running guest (libvirt backup job)"
qemu-img convert -f raw -O qcow2 "$WORK/big.raw" "$WORK/volume.qcow2"
rm -f "$WORK/big.raw"
qemu-img create -q -f qcow2 "$WORK/root.qcow2" 1G
cat >"$WORK/domain.xml" <<EOF
<domain type='qemu'>
  <name>$DOMAIN</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$IMAGE_DIR/vmlinuz</kernel>
    <initrd>$IMAGE_DIR/initrd.img</initrd>
    <cmdline>console=ttyS0 kumo.instance_id=i-figures kumo.hostname=figures</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$WORK/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$WORK/volume.qcow2'/><target dev='vdb' bus='virtio'/></disk>
    <serial type='file'><source path='$WORK/console.log'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
cat >"$WORK/backup.xml" <<EOF
<domainbackup mode='push'>
  <disks>
    <disk name='vda' backup='no'/>
    <disk name='vdb' backup='yes' type='file'><target file='$WORK/snapshot.qcow2'/><driver type='qcow2'/></disk>
  </disks>
</domainbackup>
EOF
V=(virsh -q -c qemu:///system)
"${V[@]}" define "$WORK/domain.xml" >/dev/null
"${V[@]}" start "$DOMAIN" >/dev/null
for _ in $(seq 300); do grep -q KUMO-READY "$WORK/console.log" 2>/dev/null && break; sleep 0.1; done
t0=$(now)
"${V[@]}" backup-begin "$DOMAIN" "$WORK/backup.xml" >/dev/null
# (Read the whole answer first: grep -q closing the pipe early would fail the pipeline under pipefail.)
while job=$("${V[@]}" domjobinfo "$DOMAIN") && [[ $job == *"Job type:"*bounded* || $job == *"Job type:"*Bounded* ]]; do
  sleep 0.05
done
t1=$(now)
done_job=$("${V[@]}" domjobinfo "$DOMAIN" --completed | tr -s ' ' | grep 'Job type' || true)
echo "live snapshot (guest running):   $(secs "$t0" "$t1") s  $(mbps $GIB "$t0" "$t1") MB/s; ${done_job}; $(qemu-img info -U "$WORK/snapshot.qcow2" | grep 'disk size')"
