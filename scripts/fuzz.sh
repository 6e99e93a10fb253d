#!/usr/bin/env bash
# Mutation fuzzing of every decoder of network and disk input, for longer
# than the test suite's two seconds per target. Inputs that panic are kept
# in fuzz/crashes/ (replay one: cargo run -p sluice-fuzz -- TARGET --replay FILE).
#
#   SECONDS_PER_TARGET=600 SEED=$RANDOM bash scripts/fuzz.sh [TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p sluice-fuzz
bin="${CARGO_TARGET_DIR:-target}/release/sluice-fuzz"
"$bin" "${1:-all}" --seconds "${SECONDS_PER_TARGET:-600}" --seed "${SEED:-1}" --crashes fuzz/crashes
