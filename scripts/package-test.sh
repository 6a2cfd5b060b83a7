#!/usr/bin/env bash
# The Debian package, built and installed on this machine (as root; CI's
# machine is fresh): `dpkg -i`, then the installed files are checked —
# binaries on PATH, `slotd --check-config` from /usr/bin with a config made
# from the shipped example and certificates from the installed `slotctl
# certs`, the units verified where they were installed, the group and the
# directories made by the package's postinst — and the package purged again,
# also on failure. systemd need not run.
#   scripts/package-test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'package test: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "needs root (dpkg -i)"

CARGO_DEB=$(command -v cargo-deb || true)
if [[ -z $CARGO_DEB ]]; then
  say "installing cargo-deb"
  cargo install -q --locked cargo-deb
  CARGO_DEB=$(command -v cargo-deb || echo "$HOME/.cargo/bin/cargo-deb")
fi
if dpkg-query -W -f='${Status}' slotd 2>/dev/null | grep -q 'install ok installed'; then
  fail "a slotd package is installed on this machine already; not touching it"
fi

say "building the package (release, stripped)"
cargo build --release -q -p slotd-agent --bins
DEB=$("$CARGO_DEB" -p slotd-agent --no-build --strip 2>/dev/null | tail -1)
[[ -f $DEB ]] || fail "cargo deb made no package"

WORK=$(mktemp -d /tmp/slotd-package.XXXXXX)
AGENT=
FENCER=
cleanup() {
  if [[ -n $AGENT ]]; then kill -9 "$AGENT" 2>/dev/null || true; fi
  if [[ -n $FENCER ]]; then kill -9 "$FENCER" 2>/dev/null || true; fi
  dpkg --purge slotd >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say "dpkg -i $(basename "$DEB")"
dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg -i failed"; }

[[ $(command -v slotd) == /usr/bin/slotd && $(command -v slotctl) == /usr/bin/slotctl ]] \
  || fail "slotd and slotctl are not /usr/bin's"
/usr/bin/slotd --help | grep -q -- '--check-config' || fail "slotd --help does not show --check-config"
getent group slotd >/dev/null || fail "postinst made no group slotd"
for d in /etc/slotd /etc/slotd/tls /var/lib/slotd; do
  [[ -d $d ]] || fail "postinst made no $d"
done
[[ $(stat -c %a /etc/slotd) == 750 ]] || fail "/etc/slotd is $(stat -c %a /etc/slotd), want 750"
for u in slotd.service slotd-fencer.service cyrus-slot@.service; do
  [[ -f /lib/systemd/system/$u ]] || fail "no /lib/systemd/system/$u"
done
for u in slotd.service slotd-fencer.service; do
  (cd "$WORK" && systemd-analyze verify /lib/systemd/system/$u) \
    || fail "systemd-analyze verify refuses the installed $u"
done

say "slotctl certs and slotd --check-config, from the installed binaries"
/usr/bin/slotctl certs --dir "$WORK/tls" --topology /usr/share/doc/slotd/examples/topology.toml --operator ops >/dev/null
sed -e "s|/etc/slotd/tls/|$WORK/tls/|" -e 's|driver = "systemd"|driver = "none"|' \
  /usr/share/doc/slotd/examples/slotd.toml >"$WORK/slotd.toml"
/usr/bin/slotd --check-config "$WORK/slotd.toml" || fail "slotd --check-config refuses the example config"
# The agent as the unit starts it (ExecStart), with that config on this
# machine's loopback and its own directories: it serves, then stops on
# SIGTERM with exit code 0.
sed -e 's|^listen = .*|listen = "127.0.0.1:0"|' -e 's|^metrics_listen = .*|metrics_listen = "127.0.0.1:0"|' \
  -e "s|^data_dir = .*|data_dir = \"$WORK/data\"|" -e "s|^runtime_dir = .*|runtime_dir = \"$WORK/run\"|" \
  -e 's|^interface = .*|interface = "lo"\nmanage_addresses = false|' "$WORK/slotd.toml" >"$WORK/run.toml"
mkdir -p "$WORK/data"
/usr/bin/slotd --check-config "$WORK/run.toml" >/dev/null || fail "the loopback config is refused"
# The fencer first, as slotd-fencer.service starts it (ExecStart).
/usr/bin/slotd fencer --config "$WORK/run.toml" 2>"$WORK/fencer.log" &
FENCER=$!
for _ in $(seq 1 200); do [[ -S $WORK/run/fencer.sock ]] && break; sleep 0.05; done
[[ -S $WORK/run/fencer.sock ]] || { cat "$WORK/fencer.log" >&2; fail "the installed fencer did not listen"; }
/usr/bin/slotd --config "$WORK/run.toml" 2>"$WORK/agent.log" &
AGENT=$!
for _ in $(seq 1 200); do [[ -s $WORK/data/endpoints ]] && break; sleep 0.05; done
[[ -s $WORK/data/endpoints ]] || { cat "$WORK/agent.log" >&2; fail "the installed agent did not serve"; }
ENDPOINT=$(sed -n 's/^listen=//p' "$WORK/data/endpoints")
SLOTCTL_CA=$WORK/tls/ca.pem SLOTCTL_CERT=$WORK/tls/operator-ops.pem SLOTCTL_KEY=$WORK/tls/operator-ops.key \
  /usr/bin/slotctl --endpoint "$ENDPOINT" status --stale --json | grep -q '"initialised": false' \
  || fail "the installed slotctl got no status from the installed agent"
for _ in $(seq 1 100); do grep -q 'the fencer hears this node' "$WORK/agent.log" && break; sleep 0.05; done
grep -q 'the fencer hears this node' "$WORK/agent.log" \
  || { cat "$WORK/agent.log" >&2; fail "the installed agent did not reach its fencer"; }
kill -TERM $AGENT
wait $AGENT || fail "the installed agent did not stop cleanly on SIGTERM"
AGENT=
kill -TERM $FENCER
wait $FENCER || fail "the installed fencer did not stop cleanly on SIGTERM"
FENCER=
# And a bad config is refused with exit code 2.
chmod 0644 "$WORK/tls/node-imap1.key"
set +e
/usr/bin/slotd --check-config "$WORK/slotd.toml" 2>"$WORK/err"
code=$?
set -e
[[ $code -eq 2 ]] && grep -q 'tls.key_file' "$WORK/err" || fail "a world-readable key was not refused (exit $code)"

say "dpkg --purge slotd"
dpkg --purge slotd >/dev/null
[[ ! -e /usr/bin/slotd ]] || fail "slotd is still installed after purge"
say "package test passed"
