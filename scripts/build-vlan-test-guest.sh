#!/usr/bin/env bash
# Build the 802.1Q test guest: Debian's kernel + an initramfs whose /init runs
# Kumo's own datapath code (kumo-netplumb) with a trunk, in a kernel that has
# 802.1Q (this machine's host kernel does not; see ENVIRONMENT.md).
#
#   scripts/build-vlan-test-guest.sh OUTDIR
#
# Writes OUTDIR/vmlinuz and OUTDIR/initrd.img. Boot with
#   qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot \
#     -kernel OUTDIR/vmlinuz -initrd OUTDIR/initrd.img -append console=ttyS0
# Inside, /init builds two namespaced "hosts" h1 and h2 joined by a veth
# "trunk", runs `kumo-netplumb --trunk trunk ensure` in each for VLAN 100 and
# 200, attaches "VMs" (each its own namespace) to the bridges by veth, all VMs
# in 10.100.0.0/24 so that only the VLAN separates them, and prints:
#   KUMO-NETPLUMB ensure ... elapsed_us=N       kumo-netplumb's own lines (timing)
#   KUMO-VLAN-LINK <host> <ip -d link line>     e.g. "vlan protocol 802.1Q id 100"
#   KUMO-VLAN-REFUSED <error>                   kumo-netplumb with a trunk that does not exist
#   KUMO-VLAN-PING <name> ok|fail               same-vlan-100, same-vlan-200, cross-vlan
#   KUMO-VLAN-TCPDUMP <line>                    tcpdump -e on h1's trunk during the pings
#   KUMO-VLAN-LEFT <host> <names>               Kumo links left after kumo-netplumb remove
#   KUMO-VLAN-DONE                              then powers off
# Env: KERNEL (default: newest /boot/vmlinuz-*), BUSYBOX (default: /bin/busybox),
#      NETPLUMB (default: ${CARGO_TARGET_DIR:-target}/debug/kumo-netplumb;
#      build it with `cargo build -p kumo-network --bin kumo-netplumb`).
set -euo pipefail

die() { echo "build-vlan-test-guest: ERROR: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
OUTDIR=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)

shopt -s nullglob
kernels=(/boot/vmlinuz-*)
KERNEL=${KERNEL:-$( ((${#kernels[@]})) && printf '%s\n' "${kernels[@]}" | sort -V | tail -n 1)}
[[ -n $KERNEL && -r $KERNEL ]] || die "no readable kernel (${KERNEL:-none in /boot}; install linux-image-amd64)"
KVER=${KERNEL##*/vmlinuz-}
[[ -d /lib/modules/$KVER ]] || die "/lib/modules/$KVER missing for kernel $KERNEL"
BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (install busybox-static)"
ldd "$BUSYBOX" >/dev/null 2>&1 && die "$BUSYBOX is dynamically linked (need busybox-static)"
NETPLUMB=${NETPLUMB:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/kumo-netplumb}
[[ -x $NETPLUMB ]] || die "$NETPLUMB missing (cargo build -p kumo-network --bin kumo-netplumb)"
IPROUTE=/usr/sbin/ip
[[ -x $IPROUTE ]] || IPROUTE=/sbin/ip
[[ -x $IPROUTE ]] || die "iproute2's ip missing (install iproute2)"
TCPDUMP=$(command -v tcpdump) || die "tcpdump missing (install tcpdump)"
for tool in modinfo cpio gzip ldd; do command -v "$tool" >/dev/null || die "$tool missing"; done

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/kumo-vlan-guest.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,dev,proc,sys,tmp,run,var,etc,lib/modules}
ln -s ../run "$STAGE/var/run"
cp "$BUSYBOX" "$STAGE/bin/busybox"
[[ $(id -u) -eq 0 ]] && mknod -m 600 "$STAGE/dev/console" c 5 1
echo "root:x:0:0:root:/:/bin/sh" >"$STAGE/etc/passwd"
echo "root:x:0:" >"$STAGE/etc/group"

# Dynamically linked programs go to /usr/local/bin (busybox applets never
# shadow them there) with every library ldd lists, at the same paths.
add_program() { # SRC NAME
  cp "$1" "$STAGE/usr/local/bin/$2"
  local lib
  for lib in $(ldd "$1" | grep -o '/[^ ]*'); do
    mkdir -p "$STAGE$(dirname "$lib")"
    cp -L "$lib" "$STAGE$lib"
  done
}
add_program "$IPROUTE" ip
add_program "$TCPDUMP" tcpdump
add_program "$NETPLUMB" kumo-netplumb

# Modules and their dependencies, uncompressed, in load order.
# shellcheck source=lib/initramfs-modules.sh
source "$ROOT/scripts/lib/initramfs-modules.sh"
initramfs_add_modules "$KVER" "$STAGE/lib/modules" llc stp mrp garp 8021q bridge veth \
  || die "cannot copy the kernel modules"

cat >"$STAGE/init" <<'EOF'
#!/bin/busybox sh
# Kumo 802.1Q test guest: PID 1.
export PATH=/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /run
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1
echo 4 >/proc/sys/kernel/printk
IP=/usr/local/bin/ip
PLUMB=/usr/local/bin/kumo-netplumb

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "KUMO-VLAN-ERROR insmod $m failed"
done
echo "KUMO-VLAN-BOOTED kernel=$(uname -r) 8021q=$([ -e /proc/net/vlan/config ] && echo yes || echo no)"

NET100=net-a1000000000000100
NET200=net-a2000000000000200
nsx() { ns=$1; shift; $IP netns exec "$ns" "$@"; }

# Two hosts joined by a veth trunk.
$IP netns add h1
$IP netns add h2
$IP link add trunk netns h1 type veth peer name trunk netns h2
for h in h1 h2; do
  nsx $h $IP link set lo up
  for v in 100 200; do
    if [ $v = 100 ]; then net=$NET100; cidr=10.100.0.0/24; gw=10.100.0.1; else net=$NET200; cidr=10.200.0.0/24; gw=10.200.0.1; fi
    # twice: the second run must find everything in place
    for run in 1 2; do
      nsx $h $PLUMB --trunk trunk ensure --network $net --vlan $v --cidr $cidr --gateway $gw >/tmp/plumb.out 2>&1 \
        || echo "KUMO-VLAN-ERROR kumo-netplumb failed in $h for vlan $v: $(cat /tmp/plumb.out)"
      sed "s/\$/ host=$h run=$run/" /tmp/plumb.out
    done
  done
  nsx $h $PLUMB list | sed "s/\$/ host=$h/"
  for v in 100 200; do
    nsx $h $IP -d link show kvlan$v | grep -o 'vlan protocol [^ ]* id [0-9]*' | sed "s/^/KUMO-VLAN-LINK $h kvlan$v /"
    nsx $h $IP -o link show kvlan$v | grep -o 'master [^ ]*' | sed "s/^/KUMO-VLAN-PORT $h kvlan$v /"
  done
done

# A trunk that does not exist: a clear error, and nothing created.
nsx h1 $PLUMB --trunk nosuch0 ensure --network net-a3000000000000300 --vlan 300 --cidr 10.30.0.0/24 --gateway 10.30.0.1 \
  >/tmp/refused.out 2>&1 && echo "KUMO-VLAN-ERROR missing trunk accepted"
echo "KUMO-VLAN-REFUSED $(cat /tmp/refused.out)"
echo "KUMO-VLAN-REFUSED-LEFT [$(nsx h1 $IP -o link show | grep -o 'kbra3[0-9a-f]*\|kvlan300' | tr '\n' ' ')]"

# "VMs", each in its own namespace (a namespace answers ARP for all of its
# addresses), all in 10.100.0.0/24: only the VLAN keeps them apart.
#   vm1a h1 vlan100 .11   vm2a h2 vlan100 .12   vm1b h1 vlan200 .14   vm2b h2 vlan200 .13
vm() { name=$1 host=$2 bridge=$3 addr=$4
  $IP netns add $name
  $IP -n $host link add v$name type veth peer name eth0 netns $name
  $IP -n $host link set v$name master $bridge up
  $IP -n $name link set lo up
  $IP -n $name addr add $addr/24 dev eth0
  $IP -n $name link set eth0 up
}
# the bridges' names come from the network ids: read them back from kumo-netplumb
BR100=$(nsx h1 $PLUMB list | grep "network=$NET100" | sed 's/.*bridge=\([^ ]*\).*/\1/')
BR200=$(nsx h1 $PLUMB list | grep "network=$NET200" | sed 's/.*bridge=\([^ ]*\).*/\1/')
echo "KUMO-VLAN-BRIDGES vlan100=$BR100 vlan200=$BR200"
vm vm1a h1 $BR100 10.100.0.11
vm vm2a h2 $BR100 10.100.0.12
vm vm1b h1 $BR200 10.100.0.14
vm vm2b h2 $BR200 10.100.0.13
sleep 1

nsx h1 tcpdump -Z root -i trunk -e -n -l -c 40 >/tmp/tcpdump.out 2>/tmp/tcpdump.err &
TD=$!
sleep 2
ping_check() { label=$1 from=$2 to=$3
  if nsx $from ping -c 2 -W 2 $to >/tmp/ping.out 2>&1; then echo "KUMO-VLAN-PING $label ok"; else echo "KUMO-VLAN-PING $label fail"; fi
}
ping_check same-vlan-100 vm1a 10.100.0.12
ping_check same-vlan-200 vm1b 10.100.0.13
ping_check cross-vlan vm1a 10.100.0.13
sleep 1
kill $TD 2>/dev/null
wait $TD 2>/dev/null
sed 's/^/KUMO-VLAN-TCPDUMP /' /tmp/tcpdump.out
sed 's/^/KUMO-VLAN-TCPDUMP-ERR /' /tmp/tcpdump.err

# Clean-up through the crate: nothing of Kumo's may be left.
for v in vm1a vm2a vm1b vm2b; do $IP netns del $v; done
for h in h1 h2; do
  nsx $h $PLUMB remove --network $NET100 | sed "s/\$/ host=$h/"
  nsx $h $PLUMB remove --network $NET200 | sed "s/\$/ host=$h/"
  left=$(nsx $h $IP -o link show | grep -o ': k[a-z]*[0-9a-f]*' | sed 's/: //' | tr '\n' ' ')
  echo "KUMO-VLAN-LEFT $h [${left}]"
done
echo KUMO-VLAN-DONE
sync
poweroff -f
EOF
chmod 755 "$STAGE/init"

mkdir -p "$OUTDIR"
cp "$KERNEL" "$OUTDIR/vmlinuz"
(cd "$STAGE" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUTDIR/initrd.img"
echo "$KVER" >"$OUTDIR/kernel-version"
echo "build-vlan-test-guest: $OUTDIR/vmlinuz $OUTDIR/initrd.img (kernel $KVER)"
