#!/usr/bin/env bash
# End-to-end smoke test of the tiny guest under libvirt (TCG): boot marker,
# ACPI shutdown, restart (console log appended), ACPI reboot, destroy/undefine.
# Needs root, scripts/install-system-deps.sh and scripts/start-libvirt.sh.
#
#   scripts/test-tiny-guest.sh [VIRT_TYPE]     (default qemu; kvm on real hosts)
#
# Env: MARKER_TIMEOUT (s, default 30), KEEP=1 keeps the work dir.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
V=(virsh -q -c qemu:///system)
VIRT_TYPE=${1:-qemu}
MARKER_TIMEOUT=${MARKER_TIMEOUT:-30}
NAME=kumo-smoke-$$
mkdir -p /var/lib/kumo-test
WORK=$(mktemp -d /var/lib/kumo-test/smoke.XXXXXX)
LOG=$WORK/console.log

cleanup() {
  "${V[@]}" destroy "$NAME" >/dev/null 2>&1 || true
  "${V[@]}" undefine "$NAME" >/dev/null 2>&1 || true
  if [[ ${KEEP:-} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- console tail:" >&2; tail -n 15 "$LOG" >&2 || true; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
count() { local n; n=$(grep -c "$1" "$LOG" 2>/dev/null) || true; echo "${n:-0}"; }
# wait_count PATTERN N: wait until PATTERN occurs at least N times in the log
wait_count() {
  local deadline=$((SECONDS + MARKER_TIMEOUT))
  until (($(count "$1") >= $2)); do
    ((SECONDS < deadline)) || fail "no ${2}th '$1' within ${MARKER_TIMEOUT}s"
    sleep 0.1
  done
}
wait_state() {
  local deadline=$((SECONDS + MARKER_TIMEOUT))
  until [[ "$("${V[@]}" domstate "$NAME" 2>/dev/null)" == "$1" ]]; do
    ((SECONDS < deadline)) || fail "domain not '$1' within ${MARKER_TIMEOUT}s"
    sleep 0.1
  done
}

"$HERE/build-tiny-image.sh" "$WORK" >/dev/null
qemu-img create -q -f qcow2 "$WORK/root.qcow2" 1G
cat >"$WORK/domain.xml" <<EOF
<domain type='$VIRT_TYPE'>
  <name>$NAME</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <sysinfo type='smbios'>
    <system><entry name='serial'>i-test1</entry></system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$WORK/vmlinuz</kernel>
    <initrd>$WORK/initrd.img</initrd>
    <cmdline>console=ttyS0 kumo.instance_id=i-test1 kumo.hostname=web1</cmdline>
    <smbios mode='sysinfo'/>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$WORK/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='$LOG' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$LOG' append='on'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
EOF
"${V[@]}" define "$WORK/domain.xml" >/dev/null

t=$(now); "${V[@]}" start "$NAME" >/dev/null
wait_count KUMO-READY 1
echo "boot: start -> marker $(since "$t")s"
grep -q 'KUMO-READY instance-id=i-test1 hostname=web1' "$LOG" || fail "wrong marker"

t=$(now); "${V[@]}" shutdown "$NAME" >/dev/null
wait_state "shut off"
echo "shutdown: request -> shut off $(since "$t")s"
(($(count KUMO-SHUTDOWN) == 1)) || fail "no KUMO-SHUTDOWN"

t=$(now); "${V[@]}" start "$NAME" >/dev/null
wait_count KUMO-READY 2
echo "restart: start -> 2nd marker (same log, appended) $(since "$t")s"

t=$(now); "${V[@]}" reboot "$NAME" >/dev/null
wait_count KUMO-READY 3
echo "reboot: request -> 3rd marker $(since "$t")s"
[[ "$("${V[@]}" domstate "$NAME")" == running ]] || fail "not running after reboot"

t=$(now); "${V[@]}" send-key "$NAME" KEY_LEFTCTRL KEY_LEFTALT KEY_DELETE >/dev/null
wait_count KUMO-READY 4
(($(count KUMO-REBOOT) == 1)) || fail "no KUMO-REBOOT after ctrl-alt-del"
echo "guest reboot (ctrl-alt-del): -> 4th marker $(since "$t")s"

"${V[@]}" destroy "$NAME" >/dev/null
"${V[@]}" undefine "$NAME" >/dev/null
"${V[@]}" dominfo "$NAME" >/dev/null 2>&1 && fail "domain still defined"
echo "PASS: tiny guest smoke test"
