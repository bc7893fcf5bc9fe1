#!/usr/bin/env bash
# Install every Debian 12 system package Kumo needs (dev machines and CI).
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail

PACKAGES=(
  # hypervisor + libvirt (the `virt` crate links against libvirt-dev)
  qemu-system-x86 qemu-utils
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  # tiny guest image: Debian kernel + busybox initramfs
  linux-image-amd64 busybox-static cpio gzip xz-utils kmod
  # control-plane database
  postgresql
  # config drives, DHCP, host networking
  genisoimage dnsmasq-base nftables iproute2
  # 802.1Q test guest: shows the VLAN tags on its trunk
  tcpdump
  # control panel browser tests (driven by playwright-core from npm; never a downloaded browser)
  chromium chromium-driver
  # Japanese glyphs in the panel's screenshots
  fonts-noto-cjk
  # misc tools used by scripts and tests
  procps util-linux curl ca-certificates python3 python3-venv
)

missing=()
for p in "${PACKAGES[@]}"; do
  # "install ok installed" only when fully installed
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-system-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-system-deps: installing: ${missing[*]}"
SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}"
echo "install-system-deps: done"
