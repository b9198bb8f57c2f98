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
cargo test --all-targets --locked -- --nocapture
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
cargo build --locked --quiet   # back to the default binary the other stages use
stage "fuzz (bounded)"
./scripts/fuzz.sh
stage "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
echo; echo "all tests passed in $((SECONDS - t0)) s"
