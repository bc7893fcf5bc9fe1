#!/usr/bin/env bash
# Start virtlogd + libvirtd by hand (no systemd on dev/CI machines) so that
# `virsh -c qemu:///system` works. Idempotent: a no-op when already running.
# Guests run as root without a security driver or cgroups (see
# shared/ENVIRONMENT.md, "libvirt, started by hand").
# Env: LIBVIRT_START_TIMEOUT (seconds, default 60; the first start probes QEMU, ~8 s).
set -euo pipefail

URI=qemu:///system
TIMEOUT=${LIBVIRT_START_TIMEOUT:-60}
QEMU_CONF=/etc/libvirt/qemu.conf
LOG_DIR=/var/log/libvirt
MARK_BEGIN="# >>> kumo settings (scripts/start-libvirt.sh) >>>"
MARK_END="# <<< kumo settings <<<"

die() { echo "start-libvirt: ERROR: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v libvirtd >/dev/null || die "libvirtd not found: run scripts/install-system-deps.sh"
command -v virtlogd >/dev/null || die "virtlogd not found: run scripts/install-system-deps.sh"

# libvirtd refuses to start without the libvirt-qemu user, even as root.
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 ||
  useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

mkdir -p "$LOG_DIR" /run/libvirt /var/lib/libvirt/qemu /var/cache/libvirt /etc/libvirt

# Append our qemu.conf settings exactly once.
touch "$QEMU_CONF"
if ! grep -qF "$MARK_BEGIN" "$QEMU_CONF"; then
  cat >>"$QEMU_CONF" <<EOF

$MARK_BEGIN
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
$MARK_END
EOF
fi

# running NAME PIDFILE: true if PIDFILE names a live (not zombie) process NAME.
running() {
  local pid stat
  [[ -r $2 ]] || return 1
  pid=$(cat "$2" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $stat == "$pid ($1) "[^ZX]* ]]
}

# Without journald/syslog the daemons would log nowhere; log to files.
if running virtlogd /run/virtlogd.pid && [[ -S /run/libvirt/virtlogd-sock ]]; then
  echo "start-libvirt: virtlogd already running (pid $(cat /run/virtlogd.pid))"
else
  echo "start-libvirt: starting virtlogd"
  LIBVIRT_LOG_OUTPUTS="3:file:$LOG_DIR/virtlogd.log" virtlogd -d
fi

if running libvirtd /run/libvirtd.pid && [[ -S /run/libvirt/libvirt-sock ]]; then
  echo "start-libvirt: libvirtd already running (pid $(cat /run/libvirtd.pid))"
else
  echo "start-libvirt: starting libvirtd"
  # Pin libvirtd (not its guests: libvirt gives QEMU all host CPUs) to one CPU.
  # Its QEMU capability cache is keyed on the host CPUID, whose APIC-ID field
  # depends on the CPU the daemon happens to run on; unpinned, about every
  # second start re-probes QEMU (~8 s before the first connection answers).
  cpu=$(cut -d, -f1 /sys/devices/system/cpu/online | cut -d- -f1)
  LIBVIRT_LOG_OUTPUTS="3:file:$LOG_DIR/libvirtd.log" taskset -c "$cpu" libvirtd -d
fi

# Wait until the daemon answers.
deadline=$((SECONDS + TIMEOUT))
until timeout 20 virsh -c "$URI" version >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    echo "start-libvirt: ERROR: libvirtd did not answer on $URI within ${TIMEOUT}s" >&2
    echo "--- last lines of $LOG_DIR/libvirtd.log:" >&2
    tail -n 20 "$LOG_DIR/libvirtd.log" >&2 2>/dev/null || true
    echo "--- virsh says:" >&2
    timeout 10 virsh -c "$URI" version >&2 || true
    exit 1
  fi
  sleep 0.2
done
echo "start-libvirt: $(virsh -c "$URI" version | grep -i 'running hypervisor' || echo "$URI up")"
