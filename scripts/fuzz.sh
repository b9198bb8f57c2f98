#!/bin/bash
# Runs the cargo-fuzz target for the agent reply framer/parser (fuzz/fuzz_targets/framer.rs)
# for a bounded time: FUZZ_SECONDS (default 30). CI calls it from scripts/test.sh.
#
# Stable Rust is enough: the target is built with `--sanitizer none` (the crate forbids
# unsafe code, so AddressSanitizer would only watch dependencies), which needs no nightly
# flag; libfuzzer-sys builds libFuzzer itself with the machine's C++ compiler (g++).
# Installs cargo-fuzz (pinned, from crates.io) when missing.
#
# Longer runs, by hand:
#   FUZZ_SECONDS=3600 ./scripts/fuzz.sh              # an hour
#   FUZZ_SECONDS=0 ./scripts/fuzz.sh                 # until Ctrl-C (or a crash)
#   FUZZ_JOBS=2 FUZZ_SECONDS=600 ./scripts/fuzz.sh   # one fuzzer per core
#   FUZZ_SANITIZER=address ./scripts/fuzz.sh         # with ASan (sets RUSTC_BOOTSTRAP=1)
#   FUZZ_ARGS="-max_len=65536" ./scripts/fuzz.sh     # more libFuzzer flags
# New inputs go to fuzz/target/corpus/framer (not committed); the seeds in
# fuzz/corpus/framer are only read. To keep what a long run found:
#   cd fuzz && cargo fuzz cmin --dev -s none framer target/corpus/framer  # minimise
#   cp target/corpus/framer/* corpus/framer/                               # then review
# A crash is saved under fuzz/artifacts/framer/; replay it with
#   cd fuzz && cargo fuzz run --dev -s none framer artifacts/framer/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

CARGO_FUZZ_VERSION=0.13.2
SECONDS_TO_RUN="${FUZZ_SECONDS:-30}"
SANITIZER="${FUZZ_SANITIZER:-none}"
JOBS="${FUZZ_JOBS:-1}"
t0=$SECONDS

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
  echo "fuzz: cargo-fuzz installed in $((SECONDS - t0)) s"
fi
command -v c++ >/dev/null || { echo "fuzz: libfuzzer-sys needs a C++ compiler (apt-get install g++)" >&2; exit 1; }

if [ "$SANITIZER" != none ]; then
  export RUSTC_BOOTSTRAP=1 # -Zsanitizer on the stable toolchain
fi

cd fuzz
# The committed fuzz/Cargo.lock (a copy of the main lock plus libfuzzer-sys). When a new
# dependency of the crate makes it stale, update it rather than fail, and say so.
if ! cargo fetch --locked --quiet 2>/dev/null; then
  echo "fuzz: fuzz/Cargo.lock is out of date; updating it (commit fuzz/Cargo.lock)" >&2
  cargo fetch --quiet
fi
t1=$SECONDS
cargo fuzz build --dev --sanitizer "$SANITIZER" framer
echo "fuzz: built in $((SECONDS - t1)) s"

mkdir -p target/corpus/framer
args=(-max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
[ "$JOBS" -gt 1 ] && args+=(-jobs="$JOBS" -workers="$JOBS")
# shellcheck disable=SC2206 # FUZZ_ARGS is split on purpose
args+=(${FUZZ_ARGS:-})
t2=$SECONDS
cargo fuzz run --dev --sanitizer "$SANITIZER" framer target/corpus/framer corpus/framer -- "${args[@]}"
echo "fuzz: ran ${SECONDS_TO_RUN} s (wall $((SECONDS - t2)) s), no crash; total $((SECONDS - t0)) s"
