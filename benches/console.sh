#!/usr/bin/env bash
# What the web console costs: server CPU per status call, the console's
# share of the server's CPU while it watches a full-speed ingest, and how
# fast headless Chromium shows 100,000 rows and a chart of 100,000 points.
# See benches/README.md ("Console").
#
# Environment:
#   SCALE=100 DURATION=1d SEED=1   data: hosts, time span, RNG seed
#   WORKERS=2 BATCH=5000           loader for the ingest runs
#   CALLS=2000                     HTTP calls per endpoint for the cost figures
#   RUNS=5                         browser runs per render figure (median)
#   SLUICE_BIN=<repo>/target/release/sluice  (cargo build --release -p sluice)
#   SLUICE_SHARDS=$(nproc)  BASE_PORT=28200  BENCH_BIN=  KEEP=0
#
# Needs Debian's chromium and chromium-driver. Everything listens on
# 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

SCALE=${SCALE:-100}
DURATION=${DURATION:-1d}
SEED=${SEED:-1}
WORKERS=${WORKERS:-2}
BATCH=${BATCH:-5000}
CALLS=${CALLS:-2000}
RUNS=${RUNS:-5}
SLUICE_SHARDS=${SLUICE_SHARDS:-$(nproc)}
SYSTEMS=sluice
BASE_PORT=${BASE_PORT:-28200}
KEEP=${KEEP:-0}
DB=bench

SCRIPT=console.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
command -v chromedriver >/dev/null || die "install chromium and chromium-driver"

bench_init sluice-console
DURATION_S=$(duration_seconds "$DURATION")
ROWS=$((SCALE * (DURATION_S / 10)))
ensure_systems
ensure_bench_bin
check_ports_free
DRIVER_PORT=$((BASE_PORT + 3))
URL="http://127.0.0.1:$HTTP_PORT"
PY="$HERE/console_browser.py"

DATA="$WORK/cpu.lp"
log "generating $ROWS rows ($SCALE hosts x $DURATION)"
"$BENCH_BIN" generate --scale "$SCALE" --duration "$DURATION" --seed "$SEED" --out "$DATA" >/dev/null

chromedriver --port="$DRIVER_PORT" >"$WORK/chromedriver.log" 2>&1 &
PIDS+=("$!")

# One ingest run into a fresh server, with or without the console open on
# its ingest view; prints "rows/s server-CPU-s console-CPU-s".
ingest_run() { # label with_console(0|1)
    NAME="sluice-$1"
    start_system sluice "$WORK/$NAME"
    local cpu0 cpu1 out rate browser="" bcpu=0
    if [[ "$2" == 1 ]]; then
        python3 "$PY" open "$URL" "http://127.0.0.1:$DRIVER_PORT" 3600 >/dev/null 2>&1 &
        browser=$!
        sleep 5 # the page is loaded and polling before the load starts
    fi
    cpu0=$(cpu_seconds "$PID")
    out=$("$BENCH_BIN" load --file "$DATA" --batch "$BATCH" --workers "$WORKERS" \
        --expect-rows "$ROWS" --url "$WRITE_URL" 2>&1) || { echo "$out" >&2; die_with_log "load failed"; }
    cpu1=$(cpu_seconds "$PID")
    rate=$(grep '^RESULT' <<<"$out" | tr ' ' '\n' | sed -n 's/^rows_per_s=//p')
    [[ -n "$browser" ]] && kill "$browser" 2>/dev/null || true
    stop "$PID"
    echo "$rate $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}')"
}

# Server CPU over an idle minute, with and without the console watching.
idle_cpu() { # with_console(0|1) seconds
    local b="" c0 c1
    if [[ "$1" == 1 ]]; then
        python3 "$PY" open "$URL" "http://127.0.0.1:$DRIVER_PORT" "$(($2 + 10))" >/dev/null 2>&1 &
        b=$!
        sleep 5
    fi
    c0=$(cpu_seconds "$PID")
    sleep "$2"
    c1=$(cpu_seconds "$PID")
    [[ -n "$b" ]] && { kill "$b" 2>/dev/null || true; wait "$b" 2>/dev/null || true; }
    awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.3f", b-a}'
}

log "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
read -r rate_plain cpu_plain <<<"$(ingest_run plain 0)"
read -r rate_watched cpu_watched <<<"$(ingest_run watched 1)"

NAME=sluice
start_system sluice "$WORK/sluice"
log "loading $ROWS rows for the query figures"
"$BENCH_BIN" load --file "$DATA" --batch "$BATCH" --workers "$WORKERS" --expect-rows "$ROWS" \
    --url "$WRITE_URL" >/dev/null 2>&1 || die_with_log "load failed"
lc -f -XPOST "$URL/api/v1/flush" >/dev/null
IDLE=60
idle_plain=$(idle_cpu 0 "$IDLE")
idle_watched=$(idle_cpu 1 "$IDLE")
COST=$(python3 "$PY" cost "$URL" "$PID" "$CALLS")
RENDER=$(python3 "$PY" render "$URL" "http://127.0.0.1:$DRIVER_PORT" "$RUNS")

echo
echo "Console, $SCALE hosts x $DURATION = $ROWS rows; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| endpoint | server CPU ms/call | latency ms/call |"
echo "|---|---:|---:|"
python3 "$PY" md-cost "$COST"
echo
echo "| ingest over HTTP ($WORKERS workers) | rows/s | server CPU s |"
echo "|---|---:|---:|"
echo "| console closed | $rate_plain | $cpu_plain |"
echo "| console open on the ingest view | $rate_watched | $cpu_watched |"
awk -v a="$cpu_plain" -v b="$cpu_watched" -v r1="$rate_plain" -v r2="$rate_watched" 'BEGIN {
    printf "\nserver CPU with the console open: %+.1f%%; ingest rate: %+.1f%%\n", (b - a) * 100 / a, (r2 - r1) * 100 / r1 }'
awk -v a="$idle_plain" -v b="$idle_watched" -v s="$IDLE" 'BEGIN {
    printf "idle server, %d s: %.3f CPU s closed, %.3f open: the console costs %.2f%% of one core\n", s, a, b, (b - a) * 100 / s }'
echo
echo "| in headless Chromium (median of $RUNS) | JSON MB | server + transfer ms (urllib) | fetch + parse ms (page) | grid ms | chart ms | on screen ms | browser's part ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
python3 "$PY" md-render "$RENDER"
