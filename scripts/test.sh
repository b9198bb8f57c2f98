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
stage "guest image (cached after the first build)"
cargo build --locked --quiet
./target/debug/atp demo --prepare
stage "cargo test"
cargo test --all-targets --locked -- --nocapture
stage "fuzz (bounded)"
./scripts/fuzz.sh
stage "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
echo; echo "all tests passed in $((SECONDS - t0)) s"
