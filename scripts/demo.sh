#!/usr/bin/env bash
# A local 3-node slotd cluster on 127.0.0.1: real `slotd` processes (Cyrus
# driver `none`), ports chosen by the OS, a planned topology initialised
# through one node, `slotctl status` printed, then everything stopped and
# removed — also on Ctrl-C or any failure.
#   scripts/demo.sh [BIN_DIR]     (default: target/release)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${1:-target/release}
NODES=3
SLOTS=4
WORK=$(mktemp -d /tmp/slotd-demo.XXXXXX)
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '==> %s\n' "$*" >&2; }

wait_file() {  # wait_file PATH SECONDS
  local deadline=$((SECONDS + $2))
  until [[ -s $1 ]]; do
    ((SECONDS < deadline)) || { echo "timed out waiting for $1" >&2; return 1; }
    sleep 0.05
  done
}

say "slotctl certs: a cluster CA, a certificate per node and one for operator demo"
NODE_ARGS=()
for i in $(seq 1 $NODES); do NODE_ARGS+=(--node "imap$i"); done
"$BIN/slotctl" certs --dir "$WORK/tls" "${NODE_ARGS[@]}" --operator demo >/dev/null
# slotctl shows the operator's certificate; every agent asks for one.
export SLOTCTL_CA=$WORK/tls/ca.pem SLOTCTL_CERT=$WORK/tls/operator-demo.pem SLOTCTL_KEY=$WORK/tls/operator-demo.key

for i in $(seq 1 $NODES); do
  mkdir -p "$WORK/n$i"
  cat >"$WORK/n$i.toml" <<TOML
node_id = $i
name = "imap$i"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "$WORK/n$i"
runtime_dir = "$WORK/n$i.run"
interface = "lo"
manage_addresses = false
[cyrus]
driver = "none"
[tls]
ca_file = "$WORK/tls/ca.pem"
cert_file = "$WORK/tls/node-imap$i.pem"
key_file = "$WORK/tls/node-imap$i.key"
TOML
  "$BIN/slotd" --check-config "$WORK/n$i.toml" >/dev/null
  RUST_LOG=warn "$BIN/slotd" --config "$WORK/n$i.toml" 2>"$WORK/n$i.log" &
  PIDS+=($!)
done

declare -A ADDR
for i in $(seq 1 $NODES); do
  wait_file "$WORK/n$i/endpoints" 20
  ADDR[$i]=$(sed -n 's/^listen=//p' "$WORK/n$i/endpoints")
  say "imap$i: slotd pid ${PIDS[$((i - 1))]} on ${ADDR[$i]} (metrics $(sed -n 's/^metrics=//p' "$WORK/n$i/endpoints"))"
done

say "slotctl plan --nodes $NODES --slots $SLOTS (with the agents' real addresses)"
"$BIN/slotctl" plan --nodes $NODES --slots $SLOTS >"$WORK/topology.toml"
for i in $(seq 1 $NODES); do
  sed -i "s/\"10.0.0.$i:7420\"/\"${ADDR[$i]}\"/" "$WORK/topology.toml"
done
"$BIN/slotctl" check-topology "$WORK/topology.toml"

say "slotctl --endpoint ${ADDR[2]} init topology.toml"
"$BIN/slotctl" --endpoint "${ADDR[2]}" init "$WORK/topology.toml"

say "slotctl --endpoint ${ADDR[1]} status"
"$BIN/slotctl" --endpoint "${ADDR[1]}" status

say "stopping the cluster (SIGTERM) and removing $WORK"
