#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs and starts what the tests need
# (libvirtd, PostgreSQL), builds the tiny guest image, then runs every test on
# SQLite and PostgreSQL, including the end-to-end tests that boot real TCG guests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/install-system-deps.sh
bash scripts/start-libvirt.sh

WORK=$(mktemp -d /tmp/kumo-test.XXXXXX)
chmod 755 "$WORK"
PGDATA_DIR="$WORK/pg"
cleanup() {
    bash "$ROOT/scripts/stop-postgres.sh" "$PGDATA_DIR" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PG_PORT=${KUMO_TEST_PG_PORT:-55433}
KUMO_TEST_POSTGRES_URL=$(bash scripts/start-postgres.sh "$PGDATA_DIR" "$PG_PORT")
export KUMO_TEST_POSTGRES_URL

bash scripts/build-tiny-image.sh "$WORK/tiny-image" >/dev/null
export KUMO_TEST_IMAGE_DIR="$WORK/tiny-image"
# The same guest on Debian's cloud kernel (what stock cloud images run): the
# config-drive test boots it. The kernel package is cached under /var/tmp.
bash scripts/build-cloud-kernel-image.sh "$WORK/cloud-kernel-image" >/dev/null
export KUMO_TEST_CLOUD_KERNEL_IMAGE_DIR="$WORK/cloud-kernel-image"
# A Debian 12 cloud image with Debian's own cloud-init, built by debootstrap
# and cached under /var/tmp/kumo-debian-cloud-image (the first build takes
# about 11 min on a loaded 2-core host, most of it dpkg configuring packages;
# later runs reuse the image in well under a second). The e2e module
# cloud_image boots it twice through Kumo (two TCG boots to cloud-init's final
# stage: about 7 min each on a heavily loaded host, less on an idle one).
# Measured on an idle 2-core host: both boots together about 2 min (cloud-init
# final at 63 s and 95 s of guest uptime). KUMO_TEST_CLOUD_IMAGE=0 skips them.
if [ "${KUMO_TEST_CLOUD_IMAGE:-1}" = 1 ]; then
    KUMO_TEST_DEBIAN_CLOUD_IMAGE=$(bash scripts/build-debian-cloud-image.sh)
    export KUMO_TEST_DEBIAN_CLOUD_IMAGE
fi
export KUMO_E2E=1

# The control panel's browser test: playwright-core from the lock file, driving /usr/bin/chromium.
(cd web-ui/tests/browser && npm ci --no-audit --no-fund)

# boto3, the AWS CLI and Ansible (ansible 10.7.0 bundles the amazon.aws 8.2.1
# collection) for the EC2 API tests (tests/tests/e2e/ec2.rs), pinned.
python3 -m venv "$WORK/ec2-venv"
"$WORK/ec2-venv/bin/pip" install --quiet boto3==1.35.99 awscli==1.36.40 ansible==10.7.0
export KUMO_EC2_VENV="$WORK/ec2-venv"

cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads="${KUMO_TEST_THREADS:-2}"
