#!/bin/bash
# Sets everything up and runs the whole test suite: formatting, lints, unit tests and the
# integration tests against real qemu-ga, real QEMU guests and a real libvirtd.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
t0=$SECONDS
stage() { echo; echo "== $1 ($((SECONDS - t0)) s)"; }

stage "setup"
./scripts/setup.sh
stage "cargo fmt --check"
cargo fmt --all --check
stage "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
stage "guest images (cached after the first build)"
cargo build --locked --quiet
./target/debug/atp demo --prepare
# The Debian 12 guest (mmdebstrap from Debian's mirror): about a minute cold.
./target/debug/atp demo --prepare --guest debian
stage "cargo test"
cargo test --all-targets --locked --no-run
# Two lanes at once: the tests that boot TCG guests (CPU-bound, one guest at a time), and
# those that only use host agents (mostly waiting on them). Each lane's output goes to its
# own log, printed when the lane ends; both must pass.
LIGHT=(audit cli cli_fanout daemon_auth daemon_exec daemon_files daemon_interactive
  daemon_ops docs_sync error_reasons grpc_tools host_agent policy_audit policy_limits
  props python_client reflection security_audit security_bounds security_exec serve
  exec_restart)
light_args=(--lib --bins)
for t in "${LIGHT[@]}"; do light_args+=(--test "$t"); done
heavy_args=(--benches --examples)
for t in $(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "test" in t["kind"]:
            print(t["name"])'); do
  [[ " ${LIGHT[*]} " == *" $t "* ]] || heavy_args+=(--test "$t")
done
logs=$(mktemp -d)
lane() { local name=$1; shift; cargo test --locked "$@" -- --nocapture >"$logs/$name.log" 2>&1; }
lane light "${light_args[@]}" & light_pid=$!
lane heavy "${heavy_args[@]}" & heavy_pid=$!
light_rc=0; heavy_rc=0
wait "$light_pid" || light_rc=$?
echo "== lane light (host agents) done at $((SECONDS - t0)) s, exit $light_rc"; cat "$logs/light.log"
wait "$heavy_pid" || heavy_rc=$?
echo "== lane heavy (TCG guests) done at $((SECONDS - t0)) s, exit $heavy_rc"; cat "$logs/heavy.log"
grep -h "test result" "$logs"/*.log | sed 's/^/   /'
[ "$light_rc" = 0 ] && [ "$heavy_rc" = 0 ] || { echo "cargo test failed"; exit 1; }
stage "fuzz (bounded)"
./scripts/fuzz.sh
stage "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
stage "production build: no test bed (cargo build --no-default-features)"
# The default binary (built above) carries the test bed: this proves the symbol check can
# fail. The production build must have neither the test bed's code nor `atp demo`.
# (grep -c reads all its input: with pipefail, grep -q could fail nm with SIGPIPE.)
testbed_symbols() { nm -C target/debug/atp | grep -c 'ocloudview_atp::testbed::' || true; }
[ "$(testbed_symbols)" -gt 0 ] \
    || { echo "check is broken: the default atp has no testbed symbols"; exit 1; }
cargo build --locked --quiet --no-default-features --bin atp
if [ "$(testbed_symbols)" -ne 0 ]; then
    echo "atp built with --no-default-features still contains the test bed"; exit 1
fi
if ./target/debug/atp demo --help >/dev/null 2>&1 \
    || [ "$(./target/debug/atp --help | grep -cw demo || true)" -ne 0 ]; then
    echo "atp built with --no-default-features still offers 'atp demo'"; exit 1
fi
# All targets: a test that uses the test bed but lacks `required-features = ["testbed"]`
# in Cargo.toml fails to build here.
cargo clippy --locked --quiet --no-default-features --all-targets -- -D warnings
# Last: target/debug/atp is now the production build (no test bed).
echo; echo "all tests passed in $((SECONDS - t0)) s"
