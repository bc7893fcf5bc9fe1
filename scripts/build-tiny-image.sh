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
# With a NIC (virtio-net) the guest configures eth0 by DHCP (busybox udhcpc,
# bounded: about 20 s at most, in the background so nothing else waits) and prints
#   KUMO-NET eth0 ip=<ip> gw=<gw> mac=<mac> uptime=<s>   the lease
#   KUMO-NET eth0 failed mac=<mac>                       no lease
# then reads its configuration, from a NoCloud `cidata` CD (a cdrom on
# virtio-scsi, as Kumo attaches it) when one is attached, else from the EC2 metadata service at 169.254.169.254 (IMDSv2:
# a token from PUT /latest/api/token, then GETs that carry it):
#   KUMO-CONFIG-SOURCE nocloud|ec2
#   KUMO-METADATA instance-id=<id> local-ipv4=<ip> public-ipv4=<ip|-> hostname=<name>
#   KUMO-METADATA-FAILED <why>                           nothing could be read
#   KUMO-SSH-KEY installed <first 20 chars>             key -> /root/.ssh/authorized_keys
#   KUMO-USERDATA: <line>                                each output line of a `#!` user-data script
#   KUMO-USERDATA-EXIT <code>                            when that script ends
# A marker is one 512-byte sector at offset 0: "KUMO-MARKER:<text>\n", NUL-padded.
# While it runs, the guest keeps writing a counter to sectors 8 (a) then 16 (b)
# of vda, each write flushed: a point-in-time copy of the disk always has
# b == a or b == a - 1 (a torn copy would not).
# Env: KERNEL (default: newest /boot/vmlinuz-*), BUSYBOX (default: /bin/busybox),
#      EXTRA_MODULES (space-separated module names to insmod at boot, deps resolved),
#      MODULES_ROOT (default /: where lib/modules/<version> lives, e.g. an unpacked
#      kernel package after `depmod -b`; see scripts/build-cloud-kernel-image.sh).
set -euo pipefail

die() { echo "build-tiny-image: ERROR: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
OUTDIR=$1

shopt -s nullglob
kernels=(/boot/vmlinuz-*)
KERNEL=${KERNEL:-$( ((${#kernels[@]})) && printf '%s\n' "${kernels[@]}" | sort -V | tail -n 1)}
[[ -n $KERNEL && -r $KERNEL ]] || die "no readable kernel (${KERNEL:-none in /boot}; install linux-image-amd64)"
KVER=${KERNEL##*/vmlinuz-}
MODULES_ROOT=${MODULES_ROOT:-/}
MODDIR=$MODULES_ROOT/lib/modules/$KVER
[[ -d $MODDIR ]] || die "$MODDIR missing for kernel $KERNEL"
BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (install busybox-static)"
bb_banner=$(LC_ALL=C "$BUSYBOX" --help 2>&1 | head -n 1 || true)
[[ $bb_banner == BusyBox* ]] || die "$BUSYBOX is not busybox"
ldd "$BUSYBOX" >/dev/null 2>&1 && die "$BUSYBOX is dynamically linked (need busybox-static)"
command -v modinfo >/dev/null || die "modinfo missing (install kmod)"

# ACPI power button -> input event -> busybox acpid. Both are modules in Debian.
# virtio_pci + virtio_blk: the root disk and hot-plugged volumes; virtio_net: the NICs.
read -ra extra <<<"${EXTRA_MODULES:-}"
MODULES=(button evdev virtio_pci virtio_blk virtio_net "${extra[@]}")
# Loaded only when the guest has a virtio-scsi controller (Kumo adds one with a
# config drive), so guests without one do not pay for probing SCSI.
CD_MODULES=(virtio_scsi sr_mod isofs)

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
  path=$(modinfo -b "$MODULES_ROOT" -k "$KVER" -F filename "$name" 2>/dev/null) || die "module $name not found for $KVER"
  [[ $path == /* ]] || return 0   # "(builtin)": nothing to load
  [[ $MODULES_ROOT == / || $path == "$MODULES_ROOT"/* ]] || path=$MODULES_ROOT$path
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
BOOT_COUNT=${#ORDER[@]}
for m in "${CD_MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${ORDER[@]:$BOOT_COUNT}" >"$STAGE/lib/modules/cd-load-order"

# udhcpc calls this on every DHCP event; the lease is kept in /run/net.lease.
mkdir -p "$STAGE/etc/udhcpc"
cat >"$STAGE/etc/udhcpc/default.script" <<'EOF'
#!/bin/sh
case $1 in
  deconfig)
    ip link set "$interface" up
    ip addr flush dev "$interface"
    ;;
  bound | renew)
    old=$(sed -n 's/^ip=//p' /run/net.lease 2>/dev/null)
    if [ "$old" != "$ip" ]; then
      ip addr flush dev "$interface"
      ip addr add "$ip/${mask:-24}" dev "$interface"
    fi
    gw=
    for r in $router; do gw=$r; break; done
    [ -n "$gw" ] && ip route replace default via "$gw" dev "$interface"
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    printf 'ip=%s\ngw=%s\n' "$ip" "${gw:--}" >/run/net.lease
    ;;
esac
exit 0
EOF
chmod 755 "$STAGE/etc/udhcpc/default.script"

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
# Booted from disk (no kernel command line of ours): the SMBIOS baseboard asset tag.
[ -n "$id" ] || id=$(tr -d ' \n' </sys/class/dmi/id/board_asset_tag 2>/dev/null)
[ -n "$id" ] || id=unknown
[ -n "$hn" ] || hn=kumo-guest
hostname "$hn"

# ACPI power button -> /etc/acpi/PWRF/00000080 (needs evdev nodes, so after insmod).
# acpid opens the /dev/input/event* nodes that exist when it starts, once: on a
# slow (loaded TCG) boot the power button's node can appear after that, and then
# no press is ever heard. Wait for it (up to 10 s) first.
n=0 pwrbtn=
while [ -z "$pwrbtn" ] && [ $n -lt 100 ]; do
  for e in /sys/class/input/event*; do
    case "$(cat "$e/device/name" 2>/dev/null)" in
      *"Power Button"*) [ -c "/dev/input/${e##*/}" ] && pwrbtn=${e##*/} ;;
    esac
  done
  [ -n "$pwrbtn" ] || usleep 100000
  n=$((n + 1))
done
[ -n "$pwrbtn" ] || echo "kumo-init: no power button input device; ACPI presses will not be heard"
acpid -c /etc/acpi -l /run/acpid.log
# acpid opens the nodes after it forks into the background: the marker below
# promises a guest that hears the power button, so wait until it listens.
n=0
while [ -n "$pwrbtn" ] && [ $n -lt 100 ]; do
  p=$(pidof acpid)
  [ -n "$p" ] && ls -l /proc/$p/fd 2>/dev/null | grep -q "/dev/input/$pwrbtn\$" && break
  usleep 100000
  n=$((n + 1))
done
[ $n -lt 100 ] || echo "kumo-init: acpid does not listen to the power button ($pwrbtn)"

# In-guest poweroff/halt/reboot signal PID 1; so does ctrl-alt-del once
# the kernel is told not to reboot at once (its default).
echo 0 >/proc/sys/kernel/ctrl-alt-del
trap 'echo KUMO-SHUTDOWN; sync; poweroff -f' USR1 USR2
trap 'echo KUMO-REBOOT; sync; reboot -f' TERM INT

echo "KUMO-READY instance-id=$id hostname=$hn"
echo "KUMO-UPTIME $(cut -d' ' -f1 /proc/uptime)s"

# Networking and configuration (see the header of build-tiny-image.sh), in the
# background: a guest without a NIC or a DHCP server is never held up.
imds() { # PATH -> body on stdout; fails unless 200 (uses $IMDS_TOKEN)
  timeout 10 wget -q -O - --header "X-aws-ec2-metadata-token: $IMDS_TOKEN" "http://169.254.169.254$1" 2>/dev/null
}
imds_token() { # -> an IMDSv2 session token (busybox wget cannot PUT: raw HTTP over nc)
  rm -f /run/imds-token.raw
  ( printf 'PUT /latest/api/token HTTP/1.0\r\nHost: 169.254.169.254\r\n'
    printf 'X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n'
    # keep the request side open until the answer is in (at most 5 s)
    for _ in $(seq 50); do
      sed '1,/^\r\{0,1\}$/d' /run/imds-token.raw 2>/dev/null | grep -q . && break
      sleep 0.1
    done ) | timeout 8 nc 169.254.169.254 80 >/run/imds-token.raw 2>/dev/null
  head -n 1 /run/imds-token.raw | grep -q '^HTTP/1\.[01] 200' || return 1
  sed '1,/^\r\{0,1\}$/d' /run/imds-token.raw | tr -d '\r\n'
}
nocloud_value() { # KEY -> the value of "KEY: value" in the cidata meta-data
  sed -n "s/^$1:[[:space:]]*//p" /run/cidata/meta-data | head -n 1 | tr -d "\"'\r"
}
mount_cidata() { # mounts a NoCloud cidata CD at /run/cidata if there is one
  # virtio-scsi: vendor 0x1af4, device 0x1004 (transitional) or 0x1048 (modern)
  found=
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor" 2>/dev/null)" = 0x1af4 ] || continue
    case $(cat "$d/device" 2>/dev/null) in 0x1004 | 0x1048) found=1 ;; esac
  done
  [ -n "$found" ] || return 1
  for m in $(cat /lib/modules/cd-load-order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
  mkdir -p /run/cidata
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    for dev in /dev/sr0 /dev/sr1; do
      [ -b "$dev" ] || continue
      mount -t iso9660 -o ro "$dev" /run/cidata 2>/dev/null || continue
      [ -f /run/cidata/meta-data ] && return 0
      umount /run/cidata
    done
    sleep 1
  done
  return 1
}
run_user_data() { # FILE: runs it when it is a script, its output prefixed
  [ -s "$1" ] || return 0
  [ "$(head -c 2 "$1")" = '#!' ] || { echo "KUMO-USERDATA-SKIPPED not a script"; return 0; }
  chmod 700 "$1"
  ( "$1" </dev/null 2>&1; echo "$?" >/run/user-data.rc ) | sed 's/^/KUMO-USERDATA: /'
  echo "KUMO-USERDATA-EXIT $(cat /run/user-data.rc 2>/dev/null || echo 255)"
}
install_key() { # KEY
  [ -n "$1" ] || return 0
  mkdir -p /root/.ssh && chmod 700 /root/.ssh
  printf '%s\n' "$1" >>/root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
  echo "KUMO-SSH-KEY installed $(printf '%s' "$1" | head -c 20)"
}
net_and_config() {
  ip link set lo up
  lease_ip=
  for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
  if [ -e /sys/class/net/eth0 ]; then
    mac=$(cat /sys/class/net/eth0/address)
    ip link set eth0 up
    # at most ~20 s: 6 discovers 3 s apart, then give up (-n)
    if udhcpc -i eth0 -t 6 -T 3 -n >/run/udhcpc.log 2>&1 && [ -s /run/net.lease ]; then
      lease_ip=$(sed -n 's/^ip=//p' /run/net.lease)
      echo "KUMO-NET eth0 ip=$lease_ip gw=$(sed -n 's/^gw=//p' /run/net.lease) mac=$mac uptime=$(cut -d' ' -f1 /proc/uptime)s"
    else
      echo "KUMO-NET eth0 failed mac=$mac"
    fi
  fi
  if mount_cidata; then
    echo "KUMO-CONFIG-SOURCE nocloud"
    pub=$(nocloud_value public-ipv4)
    lip=$(nocloud_value local-ipv4)
    echo "KUMO-METADATA instance-id=$(nocloud_value instance-id) local-ipv4=${lip:-${lease_ip:--}} public-ipv4=${pub:--} hostname=$(nocloud_value local-hostname)"
    key=$(grep -ho 'ssh-[a-z0-9-]* [A-Za-z0-9+/=]*[^"]*' /run/cidata/meta-data /run/cidata/user-data 2>/dev/null | head -n 1)
    install_key "$key"
    cp /run/cidata/user-data /run/user-data 2>/dev/null && run_user_data /run/user-data
  elif [ -n "$lease_ip" ]; then
    echo "KUMO-CONFIG-SOURCE ec2"
    IMDS_TOKEN=
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      IMDS_TOKEN=$(imds_token) && [ -n "$IMDS_TOKEN" ] && break
      sleep 1
    done
    if [ -z "$IMDS_TOKEN" ]; then
      echo "KUMO-METADATA-FAILED no IMDSv2 token from 169.254.169.254"
      return 0
    fi
    m_id=$(imds /latest/meta-data/instance-id)
    m_ip=$(imds /latest/meta-data/local-ipv4)
    m_pub=$(imds /latest/meta-data/public-ipv4)
    m_hn=$(imds /latest/meta-data/hostname)
    echo "KUMO-METADATA instance-id=${m_id:--} local-ipv4=${m_ip:--} public-ipv4=${m_pub:--} hostname=${m_hn:--}"
    install_key "$(imds /latest/meta-data/public-keys/0/openssh-key)"
    imds /latest/user-data >/run/user-data && run_user_data /run/user-data
  fi
}
net_and_config &

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
echo "build-tiny-image: $OUTDIR/{vmlinuz,initrd.img} kernel $KVER modules: ${ORDER[*]:0:$BOOT_COUNT} (+ with a CD: ${ORDER[*]:$BOOT_COUNT}) initrd $(du -h "$OUTDIR/initrd.img" | cut -f1)"
