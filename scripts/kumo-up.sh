#!/usr/bin/env bash
# Sets up and runs Kumo on this machine: system packages, libvirtd, the build,
# a controller on SQLite with a local compute agent, the admin login, default
# flavors and the tiny bootable image. Safe to run again: what runs keeps running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

KUMO_HOME=${KUMO_HOME:-/var/lib/kumo}
ETC=${KUMO_ETC:-/etc/kumo}
LOGS=${KUMO_LOGS:-/var/log/kumo}
API_LISTEN=${KUMO_API_LISTEN:-127.0.0.1:8774}
AGENT_LISTEN=${KUMO_AGENT_LISTEN:-127.0.0.1:8775}
# Real KVM hosts use kvm; nested virtualization (CI, this kind of VM) needs TCG.
DOMAIN_TYPE=${KUMO_DOMAIN_TYPE:-qemu}
# The cloud's CA and certificates (TLS is the default; KUMO_TLS=0 for plain HTTP on a new install).
TLS_DIR=$ETC/tls
TLS=${KUMO_TLS:-1}

if ! command -v cargo >/dev/null; then
    echo "kumo-up: cargo is missing; install a Rust toolchain (1.85 or newer, e.g. with rustup) first" >&2
    exit 1
fi

# What the build needs first; then the packages that only running Kumo needs are installed
# while the release build runs (the test suite's packages are not needed here).
bash scripts/install-system-deps.sh build
bash scripts/install-system-deps.sh run &
DEPS_PID=$!
echo "kumo-up: building (release: the controller, the agent and the CLI)"
if ! cargo build --release --quiet -p kumo-api -p kumo-agent -p kumo-cli --bins; then
    wait "$DEPS_PID" || true
    exit 1
fi
wait "$DEPS_PID"
bash scripts/start-libvirt.sh
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ln -sf "$BIN/kumo" /usr/local/bin/kumo

mkdir -p "$KUMO_HOME" "$ETC" "$LOGS" /run/kumo
bash scripts/build-tiny-image.sh "$KUMO_HOME/tiny-image" >/dev/null

if [[ ! -f $ETC/controller.toml ]]; then
    cat > "$ETC/controller.toml" <<TOML
# Kumo controller settings; every key can also be set as KUMO_<KEY>.
listen = '$API_LISTEN'
data_dir = '$KUMO_HOME/controller'
TOML
    if [[ $TLS == 1 ]]; then
        cat >> "$ETC/controller.toml" <<TOML
# HTTPS on 'listen' (API, EC2 API, panel, agents); certificates by kumo-api tls generate.
tls_cert_file = '$TLS_DIR/controller.pem'
tls_key_file = '$TLS_DIR/controller-key.pem'
# Agents' listeners (console logs) are https with certificates from the same CA.
agent_ca_file = '$TLS_DIR/ca.pem'
TOML
    fi
fi
# An existing install keeps what its config says.
if grep -q "^tls_cert_file" "$ETC/controller.toml"; then
    SCHEME=https
    CA_ARGS=(--cacert "$TLS_DIR/ca.pem")
    CLI_CA_ARGS=(--ca-cert "$TLS_DIR/ca.pem")
else
    SCHEME=http
    CA_ARGS=()
    CLI_CA_ARGS=()
fi
ENDPOINT="$SCHEME://$API_LISTEN"
if [[ $SCHEME == https ]]; then
    # The certificates name this machine (its host name and addresses) and localhost.
    LISTEN_HOST=${API_LISTEN%:*}
    SANS=()
    if [[ $LISTEN_HOST =~ ^[0-9.]+$ ]]; then
        [[ $LISTEN_HOST == 0.0.0.0 ]] || SANS+=(--ip "$LISTEN_HOST")
    else
        SANS+=(--name "$LISTEN_HOST")
    fi
    HOST_NAME=$(hostname -f 2>/dev/null || hostname)
    [[ $HOST_NAME =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] && SANS+=(--name "$HOST_NAME")
    for ip in $(hostname -I 2>/dev/null); do SANS+=(--ip "$ip"); done
    for cert in controller agent; do
        if [[ ! -f $TLS_DIR/$cert.pem ]]; then
            "$BIN/kumo-api" tls generate --dir "$TLS_DIR" --cert "$cert" "${SANS[@]}"
        fi
    done
fi

start() { # name pidfile command...
    local name=$1 pidfile=$2
    shift 2
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "kumo-up: $name already runs (pid $(cat "$pidfile"))"
        return
    fi
    nohup "$@" >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$pidfile"
    echo "kumo-up: started $name (pid $!, log $LOGS/$name.log)"
}

start kumo-api /run/kumo/api.pid "$BIN/kumo-api" --config "$ETC/controller.toml"
for _ in $(seq 1 120); do
    curl -sf "${CA_ARGS[@]}" "$ENDPOINT/healthz" >/dev/null && break
    sleep 0.5
done
curl -sf "${CA_ARGS[@]}" "$ENDPOINT/healthz" >/dev/null || { echo "kumo-up: the controller did not start; see $LOGS/kumo-api.log" >&2; exit 1; }

if [[ ! -f $ETC/agent.toml ]]; then
    cat > "$ETC/agent.toml" <<TOML
# Kumo compute agent settings; every key can also be set as KUMO_AGENT_<KEY>.
controller_url = '$ENDPOINT'
join_token = '$(cat "$KUMO_HOME/controller/join-token")'
listen = '$AGENT_LISTEN'
libvirt_uri = 'qemu:///system'
domain_type = '$DOMAIN_TYPE'
state_dir = '$KUMO_HOME/agent'
TOML
    if [[ $SCHEME == https ]]; then
        cat >> "$ETC/agent.toml" <<TOML
# The agent trusts only this CA for the controller, and serves its own listener over TLS.
controller_ca_file = '$TLS_DIR/ca.pem'
tls_cert_file = '$TLS_DIR/agent.pem'
tls_key_file = '$TLS_DIR/agent-key.pem'
TOML
    fi
    chmod 600 "$ETC/agent.toml"
fi
start kumo-agent /run/kumo/agent.pid "$BIN/kumo-agent" --config "$ETC/agent.toml"

PASSWORD=$(cat "$KUMO_HOME/controller/admin-password")
kumo login --endpoint "$ENDPOINT" "${CLI_CA_ARGS[@]}" --username admin --password "$PASSWORD" >/dev/null
if ! kumo image show tiny >/dev/null 2>&1; then
    kumo image register --name tiny --public \
        --kernel "$KUMO_HOME/tiny-image/vmlinuz" --initrd "$KUMO_HOME/tiny-image/initrd.img" >/dev/null
fi
for _ in $(seq 1 60); do
    kumo host list 2>/dev/null | grep -q up && break
    sleep 0.5
done

cat <<MSG

Kumo is running.
  Native API:     $ENDPOINT/v1   (OpenAPI document: $ENDPOINT/v1/openapi.json)
  Control panel:  $ENDPOINT/ui/   (log in as admin, or as any user you create)
MSG
if [[ $SCHEME == https ]]; then
    cat <<MSG
  TLS:            the cloud's CA is $TLS_DIR/ca.pem: browsers must trust it (import it)
                  or warn about the certificate; the CLI trusts it (kumo login --ca-cert);
                  boto3 / the AWS CLI: AWS_CA_BUNDLE=$TLS_DIR/ca.pem
MSG
fi
cat <<MSG
  Admin login:    admin / password in $KUMO_HOME/controller/admin-password (the CLI is logged in)
  Logs:           $LOGS/

Try:
  kumo flavor list
  kumo instance run --flavor mini --wait hello
  kumo instance console <id>
MSG
