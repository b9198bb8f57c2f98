#!/bin/bash
# Sets everything up, then runs `atp demo`: boots the embedded tiny guest under QEMU and
# serves it over gRPC as guest `demo` (UNIX socket + tcp://127.0.0.1:50051). Ctrl-C stops
# the daemon and the guest. Extra arguments go to `atp demo` (see `atp demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
./scripts/setup.sh
cargo build --locked --quiet
exec ./target/debug/atp demo "$@"
