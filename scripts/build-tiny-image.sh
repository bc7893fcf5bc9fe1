#!/usr/bin/env bash
# Build Kumo's tiny bootable test guest from Debian's kernel + busybox-static.
#
#   scripts/build-tiny-image.sh OUTDIR
#
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img (gzip'd newc cpio) and
# OUTDIR/kernel-version. Boot with `console=ttyS0` on the kernel command line;
# optional `kumo.instance_id=ID kumo.hostname=NAME` (falls back to the SMBIOS
# system serial, and to "kumo-guest"). The guest prints on the serial console:
#   KUMO-READY instance-id=<id> hostname=<hostname>   once userspace is up
#   KUMO-SHUTDOWN                                     on ACPI power button / poweroff
#   KUMO-REBOOT                                       when it reboots itself
# and watches its virtio disks (checked every second, hot-plugged ones included):
#   KUMO-DISK-ADDED <dev> size=<bytes> serial=<serial>  a disk appeared (vda at boot)
#   KUMO-DISK-MARKER <dev> <text>                     the disk carries a marker (sector 0)
#   KUMO-DISK-WROTE <dev> written-by=<instance-id>    it carried none: the guest wrote one
#   KUMO-DISK-REMOVED <dev>                           a disk went away (hot-unplug)
#   KUMO-DISK-COUNTERS vda a=<n> b=<m>                at boot: the root disk's write counters
# A marker is one 512-byte sector at offset 0: "KUMO-MARKER:<text>\n", NUL-padded.
# While it runs, the guest keeps writing a counter to sectors 8 (a) then 16 (b)
# of vda, each write flushed: a point-in-time copy of the disk always has
# b == a or b == a - 1 (a torn copy would not).
# Env: KERNEL (default: newest /boot/vmlinuz-*), BUSYBOX (default: /bin/busybox),
#      EXTRA_MODULES (space-separated module names to insmod at boot, deps resolved).
set -euo pipefail

die() { echo "build-tiny-image: ERROR: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
OUTDIR=$1

shopt -s nullglob
kernels=(/boot/vmlinuz-*)
KERNEL=${KERNEL:-$( ((${#kernels[@]})) && printf '%s\n' "${kernels[@]}" | sort -V | tail -n 1)}
[[ -n $KERNEL && -r $KERNEL ]] || die "no readable kernel (${KERNEL:-none in /boot}; install linux-image-amd64)"
KVER=${KERNEL##*/vmlinuz-}
MODDIR=/lib/modules/$KVER
[[ -d $MODDIR ]] || die "$MODDIR missing for kernel $KERNEL"
BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (install busybox-static)"
bb_banner=$(LC_ALL=C "$BUSYBOX" --help 2>&1 | head -n 1 || true)
[[ $bb_banner == BusyBox* ]] || die "$BUSYBOX is not busybox"
ldd "$BUSYBOX" >/dev/null 2>&1 && die "$BUSYBOX is dynamically linked (need busybox-static)"
command -v modinfo >/dev/null || die "modinfo missing (install kmod)"

# ACPI power button -> input event -> busybox acpid. Both are modules in Debian.
# virtio_pci + virtio_blk: the root disk and hot-plugged volumes.
read -ra extra <<<"${EXTRA_MODULES:-}"
MODULES=(button evdev virtio_pci virtio_blk "${extra[@]}")

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/kumo-tiny.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc/acpi/PWRF,lib/modules}
cp "$BUSYBOX" "$STAGE/bin/busybox"
# initial console for the kernel to open (needs root; /init reopens it anyway)
if [[ $(id -u) -eq 0 ]]; then
  mknod -m 600 "$STAGE/dev/console" c 5 1
fi

# Resolve module dependencies (depth first), copy them uncompressed, in load order.
declare -A SEEN=()
ORDER=()
add_module() {
  local name=${1//-/_} dep path
  [[ -n ${SEEN[$name]:-} ]] && return 0
  SEEN[$name]=1
  path=$(modinfo -k "$KVER" -F filename "$name" 2>/dev/null) || die "module $name not found for $KVER"
  [[ $path == /* ]] || return 0   # "(builtin)": nothing to load
  for dep in $(modinfo -F depends "$path" | tr ',' ' '); do add_module "$dep"; done
  case $path in
    *.ko) cp "$path" "$STAGE/lib/modules/$name.ko" ;;
    *.ko.xz) xz -dc "$path" >"$STAGE/lib/modules/$name.ko" ;;
    *.ko.zst) zstd -qdc "$path" >"$STAGE/lib/modules/$name.ko" ;;
    *.ko.gz) gzip -dc "$path" >"$STAGE/lib/modules/$name.ko" ;;
    *) die "unknown module format: $path" ;;
  esac
  ORDER+=("$name")
}
for m in "${MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" >"$STAGE/lib/modules/load-order"

# busybox acpid maps KEY_POWER to action PWRF/00000080 and runs this script.
cat >"$STAGE/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# ACPI power button (virsh shutdown / virsh reboot): clean power-off.
echo KUMO-SHUTDOWN >/dev/console
sync
poweroff -f
EOF
chmod 755 "$STAGE/etc/acpi/PWRF/00000080"

cat >"$STAGE/init" <<'EOF'
#!/bin/busybox sh
# Kumo tiny guest: PID 1. Must never exit.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /run
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1
# keep async kernel notices (e.g. "random: crng init done") off our marker lines
case " $(cat /proc/cmdline) " in
  *" loglevel="* | *" debug "*) ;;
  *) echo 4 >/proc/sys/kernel/printk ;;
esac

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "kumo-init: insmod $m failed"
done

id= hn=
for w in $(cat /proc/cmdline); do
  case $w in
    kumo.instance_id=*) id=${w#*=} ;;
    kumo.hostname=*) hn=${w#*=} ;;
  esac
done
[ -n "$id" ] || id=$(tr -d ' \n' </sys/class/dmi/id/product_serial 2>/dev/null)
[ -n "$id" ] || id=unknown
[ -n "$hn" ] || hn=kumo-guest
hostname "$hn"

# ACPI power button -> /etc/acpi/PWRF/00000080 (needs evdev nodes, so after insmod)
acpid -c /etc/acpi -l /run/acpid.log

# In-guest poweroff/halt/reboot signal PID 1; so does ctrl-alt-del once
# the kernel is told not to reboot at once (its default).
echo 0 >/proc/sys/kernel/ctrl-alt-del
trap 'echo KUMO-SHUTDOWN; sync; poweroff -f' USR1 USR2
trap 'echo KUMO-REBOOT; sync; reboot -f' TERM INT

echo "KUMO-READY instance-id=$id hostname=$hn"
echo "KUMO-UPTIME $(cut -d' ' -f1 /proc/uptime)s"

# The disk watcher (see the header of build-tiny-image.sh for what it prints).
read_sector() { # DEV SECTOR PREFIX -> the text after PREFIX in that sector, if any
  dd if="/dev/$1" bs=512 skip="$2" count=1 2>/dev/null | tr -d '\000' | sed -n "s/^$3//p" | head -n 1
}
write_sector() { # DEV SECTOR TEXT
  printf '%s\n' "$3" | dd of="/dev/$1" bs=512 seek="$2" count=1 conv=sync,fsync 2>/dev/null
}
disk_added() {
  n=$1
  size=$(( $(cat "/sys/block/$n/size") * 512 ))
  serial=$(cat "/sys/block/$n/serial" 2>/dev/null)
  echo "KUMO-DISK-ADDED $n size=$size serial=${serial:--}"
  m=$(read_sector "$n" 0 KUMO-MARKER:)
  if [ -n "$m" ]; then
    echo "KUMO-DISK-MARKER $n $m"
  elif write_sector "$n" 0 "KUMO-MARKER:written-by=$id"; then
    echo "KUMO-DISK-WROTE $n written-by=$id"
  else
    echo "KUMO-DISK-WRITE-FAILED $n"
  fi
  if [ "$n" = vda ]; then
    a=$(read_sector vda 8 KUMO-COUNT:) b=$(read_sector vda 16 KUMO-COUNT:)
    echo "KUMO-DISK-COUNTERS vda a=${a:-0} b=${b:-0}"
    count=${a:-0}
    ( while :; do
        count=$((count + 1))
        write_sector vda 8 "KUMO-COUNT:$count" && write_sector vda 16 "KUMO-COUNT:$count"
        sleep 1
      done ) &
  fi
}
( known=" "
  while :; do
    for d in /sys/block/vd*; do
      [ -e "$d" ] || continue
      n=${d##*/}
      case $known in *" $n "*) continue ;; esac
      known="$known$n "
      disk_added "$n"
    done
    for n in $known; do
      [ -e "/sys/block/$n" ] && continue
      echo "KUMO-DISK-REMOVED $n"
      known=$(echo "$known" | sed "s/ $n / /")
    done
    sleep 1
  done ) &

# Idle forever; `wait` returns early when a trapped signal arrives.
while :; do
  sleep 3600 &
  wait $!
done
EOF
chmod 755 "$STAGE/init"

mkdir -p "$OUTDIR"
# Write to temp names, then rename: readers never see a half-written image.
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort |
  cpio -o -H newc --owner 0:0 --reproducible --quiet) | gzip -n -6 >"$OUTDIR/.initrd.img.tmp"
cp "$KERNEL" "$OUTDIR/.vmlinuz.tmp"
mv -f "$OUTDIR/.initrd.img.tmp" "$OUTDIR/initrd.img"
mv -f "$OUTDIR/.vmlinuz.tmp" "$OUTDIR/vmlinuz"
echo "$KVER" >"$OUTDIR/kernel-version"
echo "build-tiny-image: $OUTDIR/{vmlinuz,initrd.img} kernel $KVER modules: ${ORDER[*]} initrd $(du -h "$OUTDIR/initrd.img" | cut -f1)"
