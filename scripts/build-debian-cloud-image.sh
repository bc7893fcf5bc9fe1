#!/usr/bin/env bash
# Build a small Debian 12 (bookworm) cloud image with Debian's own cloud-init,
# from Debian packages only (debootstrap), for the end-to-end test that boots a
# real cloud image through Kumo (tests/tests/e2e/cloud_image.rs).
#
#   scripts/build-debian-cloud-image.sh        # prints the qcow2's path
#
# The image is cached under $KUMO_DEBIAN_CLOUD_CACHE (default
# /var/tmp/kumo-debian-cloud-image), never in the repository, and reused while
# this script is unchanged (a stamp holds its hash); downloaded packages are
# kept in the cache too, so a rebuild downloads nothing.
#
# What is in it: debootstrap --variant=minbase, plus linux-image-cloud-amd64
# (the kernel of Debian's stock cloud images: virtio, virtio-scsi, no AHCI),
# systemd-sysv + udev, systemd-networkd (cloud-init renders its network
# config for it), cloud-init, openssh-server. cloud-init's datasource list
# and ds-identify policy are Debian's defaults: the image is configured only
# for speed under emulation (no RSA host key, C.UTF-8, no periodic units).
#
# Layout (1 GiB virtual, so it fits the `mini` flavor's disk): an MBR with
# syslinux's boot code; partition 1 a 48 MiB FAT holding syslinux, the kernel
# and the initrd (console=ttyS0 net.ifnames=0, root on /dev/vda2); partition 2
# the ext4 root, made with `mke2fs -d` (no loop device or mount for the disk).
# debootstrap itself mounts /proc and /sys inside its chroot while it runs.
set -euo pipefail

die() { echo "build-debian-cloud-image: ERROR: $*" >&2; exit 1; }
log() { echo "build-debian-cloud-image: $*" >&2; }
[[ $# -eq 0 ]] || die "usage: $0   (prints the image's path)"
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap)"
for tool in debootstrap mke2fs mkfs.vfat mcopy syslinux sfdisk qemu-img; do
  command -v "$tool" >/dev/null || die "$tool missing (bash scripts/install-system-deps.sh test)"
done
MBR=/usr/lib/syslinux/mbr/mbr.bin
[[ -r $MBR ]] || die "$MBR missing (install syslinux-common)"

CACHE=${KUMO_DEBIAN_CLOUD_CACHE:-/var/tmp/kumo-debian-cloud-image}
MIRROR=${KUMO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE=$CACHE/debian-12-cloud.qcow2
STAMP=$CACHE/debian-12-cloud.stamp
# python3-cffi-backend: python3-cryptography depends on virtual packages it
# provides, which debootstrap's resolver does not follow.
PACKAGES=systemd-sysv,udev,iproute2,cloud-init,python3-cffi-backend,openssh-server,linux-image-cloud-amd64,initramfs-tools,zstd
WANT=$(cat "$0" | sha256sum | cut -c1-16)

if [[ -s $IMAGE && -r $STAMP && $(cat "$STAMP") == "$WANT" ]]; then
  echo "$IMAGE"
  exit 0
fi

start=$(date +%s)
# Only the image's path goes to stdout; what the tools print goes to stderr.
exec 3>&1 1>&2
mkdir -p "$CACHE/debs"
WORK=$CACHE/work
ROOT=$WORK/rootfs
cleanup() {
  # debootstrap leaves /proc and /sys mounted in the chroot when it fails.
  for m in "$ROOT/proc" "$ROOT/sys"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"

# The debootstrapped base is kept as a tarball (keyed by the package list), so
# a change to the configuration below rebuilds in a minute or two.
BASE=$CACHE/base-$(echo "$MIRROR $PACKAGES" | sha256sum | cut -c1-12).tar
if [[ -s $BASE ]]; then
  log "reusing the debootstrapped base $BASE"
  mkdir -p "$ROOT"
  tar -C "$ROOT" --numeric-owner --xattrs -xf "$BASE"
else
  log "debootstrap bookworm (minbase + $PACKAGES) from $MIRROR"
  debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE/debs" \
    bookworm "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
    cp "$ROOT/debootstrap/debootstrap.log" "$CACHE/debootstrap-chroot.log" 2>/dev/null || true
    die "debootstrap failed; see $CACHE/debootstrap.log and debootstrap-chroot.log"
  }
  rm -f "$CACHE"/base-*.tar
  tar -C "$ROOT" --numeric-owner --xattrs -cf "$BASE.tmp" .
  mv "$BASE.tmp" "$BASE"
fi

# --- configuration -----------------------------------------------------------
# The initramfs: only what finds and mounts the root (small, quick under TCG).
cat >"$ROOT/etc/initramfs-tools/conf.d/kumo.conf" <<'EOF'
MODULES=list
COMPRESS=zstd
EOF
# virtio_scsi + sr_mod: the config drive's cdrom exists by the time
# cloud-init's generator (ds-identify) looks for a `cidata` filesystem.
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod sr_mod cdrom isofs ext4 crc32c_generic \
  >"$ROOT/etc/initramfs-tools/modules"
chroot "$ROOT" update-initramfs -u -k all >"$WORK/initramfs.log" 2>&1 ||
  { cat "$WORK/initramfs.log" >&2; die "update-initramfs failed"; }

cat >"$ROOT/etc/fstab" <<'EOF'
LABEL=kumo-root  /  ext4  defaults,noatime,errors=remount-ro  0  1
EOF
# Each instance gets its own machine id and SSH host keys (cloud-init makes those).
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT"/etc/ssh/ssh_host_*
echo localhost >"$ROOT/etc/hostname"

# cloud-init's datasources are Debian's own (90_dpkg.cfg as the package
# ships it) and its boot-time detector (ds-identify) keeps its stock policy:
# it finds a `cidata` config drive by its label and Kumo's EC2-compatible
# metadata service by the EC2 signature in the guest's SMBIOS tables (see
# compute-agent/src/domain_xml.rs), with nothing Kumo-specific in the image.
cat >"$ROOT/etc/cloud/cloud.cfg.d/50_kumo.cfg" <<'EOF'
# RSA host keys take long to make under emulation.
ssh_genkeytypes: [ed25519, ecdsa]
# minbase has no `locales`: en_US.UTF-8 (the default) fails update-locale.
locale: C.UTF-8
EOF

# Networking by systemd-networkd (cloud-init writes its .network files).
chroot "$ROOT" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Nothing periodic or slow at boot.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
  chroot "$ROOT" systemctl disable "$unit" >/dev/null 2>&1 || true
done
# A serial console login for debugging (`kumo instance console`).
chroot "$ROOT" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true

KVER=$(basename "$(ls -d "$ROOT"/lib/modules/*-cloud-amd64 | head -n 1)")
[[ -r $ROOT/boot/vmlinuz-$KVER && -r $ROOT/boot/initrd.img-$KVER ]] || die "no kernel/initrd for $KVER"
cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$WORK/initrd.img"

# Slim the root: package caches, docs, manuals, other locales.
rm -rf "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/*.log \
  "$ROOT"/var/lib/cloud "$ROOT"/tmp/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' ! -name locale.alias -exec rm -rf {} +

# --- the disk ----------------------------------------------------------------
DISK_MIB=1024
BOOT_START=2048             # sectors (1 MiB)
BOOT_MIB=48
ROOT_START=$(((1 + BOOT_MIB) * 2048))
ROOT_MIB=$((DISK_MIB - 1 - BOOT_MIB))

cat >"$WORK/syslinux.cfg" <<EOF
DEFAULT debian
TIMEOUT 0
PROMPT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=kumo-root ro console=ttyS0 net.ifnames=0 biosdevname=0
EOF
mkfs.vfat -C -n KUMOBOOT "$WORK/boot.fat" $((BOOT_MIB * 1024)) >/dev/null
syslinux --install "$WORK/boot.fat"
mcopy -i "$WORK/boot.fat" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/

used_mib=$(du -sm "$ROOT" | cut -f1)
((used_mib + 100 < ROOT_MIB)) || die "the root ($used_mib MiB) does not fit $ROOT_MIB MiB"
mke2fs -q -t ext4 -L kumo-root -d "$ROOT" -F "$WORK/root.ext4" "${ROOT_MIB}M" ||
  die "mke2fs -d failed"

truncate -s "${DISK_MIB}M" "$WORK/disk.raw"
sfdisk -q "$WORK/disk.raw" <<EOF
label: dos
start=$BOOT_START, size=$((BOOT_MIB * 2048)), type=c, bootable
start=$ROOT_START, size=$((ROOT_MIB * 2048)), type=83
EOF
dd if="$MBR" of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/boot.fat" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$WORK/root.ext4" of="$WORK/disk.raw" bs=1M seek=$((1 + BOOT_MIB)) conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$IMAGE.tmp"
mv "$IMAGE.tmp" "$IMAGE"
echo "$WANT" >"$STAMP"
log "built $IMAGE ($(du -h "$IMAGE" | cut -f1) on disk, root $used_mib MiB, kernel $KVER) in $(($(date +%s) - start)) s"
echo "$IMAGE" >&3
