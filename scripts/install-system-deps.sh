#!/usr/bin/env bash
# Install every Debian 12 system package Kumo needs (dev machines and CI).
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail

# Usage: install-system-deps.sh [build] [run] [test]   (no group: all three)
#   build  what compiling Kumo needs (the `virt` crate links against libvirt-dev)
#   run    what running Kumo needs (scripts/kumo-up.sh)
#   test   what only the test suite needs (PostgreSQL, the browser, tcpdump, Prometheus)
BUILD=(libvirt-dev pkg-config)
RUN=(
  # hypervisor + libvirt
  qemu-system-x86 qemu-utils
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  # tiny guest image: Debian kernel + busybox initramfs
  linux-image-amd64 busybox-static cpio gzip xz-utils kmod
  # config drives, DHCP, host networking
  genisoimage dnsmasq-base nftables iproute2
  # misc tools used by scripts and tests
  procps util-linux curl ca-certificates python3 python3-venv
)
TEST=(
  # control-plane database (the API tests run on SQLite and PostgreSQL)
  postgresql
  # 802.1Q test guest: shows the VLAN tags on its trunk
  tcpdump
  # the load balancer in front of two controller replicas (e2e replicas test)
  haproxy
  # control panel browser tests (driven by playwright-core from npm; never a downloaded browser)
  chromium chromium-driver
  # Japanese glyphs in the panel's screenshots
  fonts-noto-cjk
  # the metrics e2e test scrapes a stack with a real Prometheus server
  prometheus
  # the Debian cloud image (scripts/build-debian-cloud-image.sh) and its e2e
  # test, which logs into the guest with ssh
  debootstrap e2fsprogs dosfstools mtools syslinux syslinux-common fdisk openssh-client
)

WANT=("$@")
[[ ${#WANT[@]} -gt 0 ]] || WANT=(build run test)
PACKAGES=()
for g in "${WANT[@]}"; do
  case $g in
    build) PACKAGES+=("${BUILD[@]}") ;;
    run) PACKAGES+=("${RUN[@]}") ;;
    test) PACKAGES+=("${TEST[@]}") ;;
    *) echo "install-system-deps: unknown group '$g' (build, run or test)" >&2; exit 2 ;;
  esac
done

missing=()
find_missing() {
  missing=()
  for p in "${PACKAGES[@]}"; do
    # "install ok installed" only when fully installed
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
}
find_missing

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-system-deps: all ${#PACKAGES[@]} packages (${WANT[*]}) already installed"
  exit 0
fi

echo "install-system-deps: installing: ${missing[*]}"
SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
apt_install() {
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
apt_install "${missing[@]}"
# A package that was already there can be removed by the install: a machine
# with qemu-utils from bookworm-backports loses it when apt brings bookworm's
# qemu-system-x86 (seen on a fresh machine: no qemu-img afterwards). Install
# whatever is missing now, from the versions apt picks together.
find_missing
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-system-deps: the install removed ${missing[*]}; installing again"
  apt_install "${missing[@]}"
  find_missing
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "install-system-deps: ERROR: still missing: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "install-system-deps: done"
