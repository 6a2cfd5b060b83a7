#!/usr/bin/env bash
# dev.sh — the entry points of this repository, each doing its own set-up
# on a fresh Debian 12 machine (run as root, or with sudo available):
#
#   ./dev.sh demo   the main job (root): three machines and a client, each a
#                   network namespace, real slotd agents (real Cyrus if installed,
#                   mutual TLS); init, status, one machine killed and its
#                   masters failing over (timed), back, rebalance, cleaned up
#                   (also on Ctrl-C). Without root: scripts/demo.sh, the same
#                   cluster on 127.0.0.1 without the failover
#   ./dev.sh bench  (root) slotd vs keepalived on the same namespaces: one
#                   table, also written to target/keepalived-vs-slotd.md
#   ./dev.sh test   every test of the workspace (some need root: network
#                   namespaces, netlink, raw sockets — they fail, never skip,
#                   without it), then the demo end to end, then the Debian
#                   package built, installed with dpkg -i, checked and
#                   purged (root too)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Debian packages the build and the tests use.
PACKAGES=(iproute2 util-linux procps ca-certificates gcc libc6-dev pkg-config protobuf-compiler cyrus-imapd cyrus-replication sasl2-bin systemd)

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

need_rust() {
  # Debian 12's own cargo (1.63) is too old for openraft/redb; rustup's is used.
  [[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
  if ! command -v cargo >/dev/null; then
    say "no Rust toolchain: install one with rustup (https://rustup.rs), Rust >= 1.89, then run again"
    exit 1
  fi
}

# run_as_root_bench BENCH WHY ARGS…: the bench target BENCH of slotd-agent,
# built for release with the binaries it runs, as root (WHY says why).
run_as_root_bench() {
  local bench=$1 why=$2
  shift 2
  if [[ $(id -u) -ne 0 ]]; then
    say "run it as root: $why"
    exit 1
  fi
  say "building slotd, slotctl and the $bench bench (release)"
  cargo build --release -q -p slotd-agent --bins
  exec cargo bench -q -p slotd-agent --bench "$bench" -- "$@"
}

# build_demo PROFILE: the demo (the example `demo` of slotd-agent) and the
# binaries it starts, built in one run; prints the demo's path.
build_demo() {
  local profile=$1 dir
  [[ $profile == dev ]] && dir=debug || dir=$profile
  say "building slotd, slotctl and the demo ($profile)"
  cargo build -q --profile "$profile" -p slotd-agent --bins --example demo
  echo "${CARGO_TARGET_DIR:-target}/$dir/examples/demo"
}

case ${1:-} in
  demo)
    install_packages
    need_rust
    if [[ $(id -u) -ne 0 ]]; then
      say "run it as root: the demo makes network namespaces (or try scripts/demo.sh, on 127.0.0.1, no failover)"
      exit 1
    fi
    demo=$(build_demo release)
    exec "$demo" "${@:2}"
    ;;
  bench)
    PACKAGES+=(keepalived)
    install_packages
    need_rust
    run_as_root_bench keepalived "the benchmark makes network namespaces" "${@:2}"
    ;;
  test)
    install_packages
    need_rust
    if [[ $(id -u) -ne 0 ]]; then
      say "warning: not root; the network-namespace tests will fail (they never skip)"
    fi
    status=0
    if cargo nextest --version >/dev/null 2>&1; then
      cargo nextest run --workspace --no-fail-fast || status=1
    else
      cargo test --workspace --no-fail-fast || status=1
    fi
    # The demo, end to end, as the README runs it (debug build, plain lines).
    if demo=$(build_demo dev); then
      say "the demo ($demo --ci)"
      timeout 300 "$demo" --ci || status=1
    else
      status=1
    fi
    # The Debian package: built, installed with dpkg -i, checked, purged.
    say "the Debian package (scripts/package-test.sh)"
    scripts/package-test.sh || status=1
    exit $status
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
