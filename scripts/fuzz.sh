#!/usr/bin/env bash
# Fuzzing of every decoder of network and disk input, for longer than the
# test suite's two seconds per target.
#
#   bash scripts/fuzz.sh coverage [TARGET|all]   # libFuzzer, coverage-guided
#   bash scripts/fuzz.sh mutation [TARGET|all]   # the blind mutation driver
#   SECONDS_PER_TARGET=600 (default) sets the time per target; SEED=N the
#   mutation driver's seed.
#
# coverage builds the targets with the sanitizer-coverage passes that the
# stable compiler accepts (no nightly, no sanitizers) into a target
# directory of its own, and keeps a growing corpus in fuzz/corpus/<target>.
# Inputs that panic land in fuzz/crashes/ either way; replay one with
#   cargo run -p sluice-fuzz -- TARGET --replay FILE
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-coverage}"
which="${2:-all}"
secs="${SECONDS_PER_TARGET:-600}"
base="${CARGO_TARGET_DIR:-target}"
mkdir -p fuzz/crashes

cargo build -q --release -p sluice-fuzz --bin sluice-fuzz
driver="$base/release/sluice-fuzz"
if [ "$mode" = mutation ]; then
  exec "$driver" "$which" --seconds "$secs" --seed "${SEED:-1}" --crashes fuzz/crashes
fi
if [ "$mode" != coverage ]; then
  echo "usage: scripts/fuzz.sh coverage|mutation [TARGET|all]" >&2
  exit 2
fi

# With an explicit --target, RUSTFLAGS reach the code under test but not
# build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
CARGO_TARGET_DIR="$base-libfuzzer" cargo build -q --release -p sluice-fuzz \
  --features libfuzzer --bin sluice-libfuzzer --target "$host"
unset RUSTFLAGS
bin="$base-libfuzzer/$host/release/sluice-libfuzzer"

if [ "$which" = all ]; then
  targets=$("$driver" --list)
else
  targets="$which"
fi
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
status=0
for t in $targets; do
  "$driver" "$t" --write-seeds "$seeds"
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: $secs s of libFuzzer"
  SLUICE_FUZZ_TARGET="$t" "$bin" "fuzz/corpus/$t" "$seeds/$t" \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 -timeout=20 \
    -print_final_stats=1 -artifact_prefix="fuzz/crashes/$t-" 2>&1 |
    grep -E '^(#[0-9]+ +DONE|stat::|==[0-9]+==|SUMMARY|thread .* panicked|Done )' || true
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
exit "$status"
