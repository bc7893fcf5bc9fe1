#!/usr/bin/env bash
# Build the tiny test guest (scripts/build-tiny-image.sh) on Debian's *cloud*
# kernel (linux-image-cloud-amd64), the kernel of Debian's stock cloud images:
# it has far fewer drivers than the full kernel (no AHCI/SATA, for one), so a
# guest on it shows whether stock cloud images can use what Kumo attaches
# (the config drive above all).
#
#   scripts/build-cloud-kernel-image.sh OUTDIR
#
# The package is downloaded with apt (no install) and unpacked under
# $KUMO_CLOUD_KERNEL_CACHE (default /var/tmp/kumo-cloud-kernel), reused later.
set -euo pipefail

die() { echo "build-cloud-kernel-image: ERROR: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
OUTDIR=$1
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KUMO_CLOUD_KERNEL_CACHE:-/var/tmp/kumo-cloud-kernel}
command -v depmod >/dev/null || die "depmod missing (install kmod)"

# The versioned package the metapackage points at, e.g. linux-image-6.1.0-57-cloud-amd64.
package() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}
PKG=$(package)
if [[ -z $PKG ]]; then
  apt-get update -qq || true
  PKG=$(package)
fi
[[ -n $PKG ]] || die "apt knows no linux-image-cloud-amd64 (is a Debian 12 source configured?)"
KVER=${PKG#linux-image-}
ROOT=$CACHE/$KVER
if [[ ! -r $ROOT/boot/vmlinuz-$KVER || ! -s $ROOT/lib/modules/$KVER/modules.dep ]]; then
  mkdir -p "$CACHE"
  rm -rf "$ROOT" "$CACHE"/*.deb
  # apt's sandbox user cannot write everywhere; download in the cache dir.
  (cd "$CACHE" && apt-get download -qq "$PKG" 2>/dev/null) ||
    (apt-get update -qq && cd "$CACHE" && apt-get download -qq "$PKG") ||
    die "cannot download $PKG"
  dpkg-deb -x "$CACHE/${PKG}"_*.deb "$ROOT"
  rm -f "$CACHE/${PKG}"_*.deb
  depmod -b "$ROOT" "$KVER"
fi
KERNEL=$ROOT/boot/vmlinuz-$KVER MODULES_ROOT=$ROOT "$HERE/build-tiny-image.sh" "$OUTDIR"
