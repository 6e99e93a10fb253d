#!/usr/bin/env bash
# Ingest benchmark: Sluice vs InfluxDB 1.x vs VictoriaMetrics, one after the
# other, on the same generated TSBS cpu-only file. See benches/README.md.
#
# Environment:
#   SCALE=100 DURATION=1d SEED=1     data: hosts, time span, RNG seed
#   WORKERS=4 BATCH=5000 GZIP=0      loader: concurrent connections, lines per request
#   SLUICE_BIN=<repo>/target/release/sluice  (cargo build --release -p sluice)
#   SLUICE_SHARDS=$(nproc)           --shards for Sluice
#   SYSTEMS="sluice influxdb victoriametrics"   which systems, in order
#   TCP=0                            1 adds raw-TCP line protocol rows (Sluice, VictoriaMetrics)
#   BASE_PORT=28000                  ports BASE_PORT..BASE_PORT+2, all on 127.0.0.1
#   DATA_FILE=                       reuse an existing generated file instead of generating
#   BENCH_BIN=                       prebuilt sluice-bench (else built with cargo)
#   KEEP=0                           1 keeps the temp dir (data dirs, server logs)
#
# Everything listens on and talks to 127.0.0.1 only. Every server started here
# is stopped on exit.
set -euo pipefail

SCALE=${SCALE:-100}
DURATION=${DURATION:-1d}
SEED=${SEED:-1}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-5000}
GZIP=${GZIP:-0}
TCP=${TCP:-0}
SLUICE_SHARDS=${SLUICE_SHARDS:-$(nproc)}
SYSTEMS=${SYSTEMS:-"sluice influxdb victoriametrics"}
BASE_PORT=${BASE_PORT:-28000}
KEEP=${KEEP:-0}
DB=bench

SCRIPT=ingest.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}

bench_init sluice-ingest
DURATION_S=$(duration_seconds "$DURATION")
ROWS=$((SCALE * (DURATION_S / 10)))

ensure_systems
ensure_bench_bin
check_ports_free

if [[ -n "${DATA_FILE:-}" ]]; then
    DATA=$DATA_FILE
else
    DATA="$WORK/cpu-$SCALE-$DURATION.lp"
    log "generating $ROWS rows ($SCALE hosts x $DURATION) into $DATA"
    "$BENCH_BIN" generate --scale "$SCALE" --duration "$DURATION" --seed "$SEED" --out "$DATA" >/dev/null
fi

# --- running -------------------------------------------------------------------

RESULTS=()
FAILED=0
run() { # system mode(http|tcp)
    local system=$1 mode=$2
    NAME=$system; [[ "$mode" == tcp ]] && NAME="$system-tcp"
    local dir="$WORK/$NAME"
    start_system "$system" "$dir"
    local busy0 busy1 cpu0 cpu1 rss out db=$DB
    busy0=$(machine_busy_seconds)
    cpu0=$(cpu_seconds "$PID")
    local args=(load --file "$DATA" --batch "$BATCH" --workers "$WORKERS" --expect-rows "$ROWS")
    if [[ "$mode" == tcp ]]; then
        args+=(--tcp "$WRITE_TCP")
        [[ "$system" == sluice ]] && db=default
    else
        args+=(--url "$WRITE_URL")
        [[ "$GZIP" == 1 ]] && args+=(--gzip)
    fi
    [[ -n "$FLUSH_URL" ]] && args+=(--flush-url "$FLUSH_URL")
    log "$NAME: loading ($mode, $WORKERS workers, batches of $BATCH)"
    if ! out=$("$BENCH_BIN" "${args[@]}" 2>&1); then
        echo "$out" >&2
        die_with_log "$NAME: load failed"
    fi
    cpu1=$(cpu_seconds "$PID")
    busy1=$(machine_busy_seconds)
    rss=$(peak_rss_mib "$PID")
    echo "$out" | grep -v '^RESULT' >&2
    local result count status
    result=$(grep '^RESULT' <<<"$out")
    if [[ "$system" == sluice ]]; then count=$(count_sluice "$db"); else count=$("count_$system"); fi
    if [[ "$count" == "$ROWS" ]]; then
        status=ok
    else
        status="MISMATCH(${count:-?})"
        FAILED=1
        echo "ingest.sh: $NAME stored ${count:-an unknown number of} rows, expected $ROWS" >&2
    fi
    log "$NAME: $count rows stored, server CPU $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}')s, peak RSS ${rss} MiB"
    stop "$PID"
    local disk
    disk=$(du -sm "$dir" | cut -f1)
    local kv rows_s values_s elapsed loader_cpu loader_total p99 other
    for kv in $result; do
        case "$kv" in
            rows_per_s=*) rows_s=${kv#*=} ;; values_per_s=*) values_s=${kv#*=} ;;
            elapsed_s=*) elapsed=${kv#*=} ;; loader_cpu_s=*) loader_cpu=${kv#*=} ;;
            loader_total_cpu_s=*) loader_total=${kv#*=} ;; p99_ms=*) p99=${kv#*=} ;;
        esac
    done
    # CPU used by anything but this server and the loader while they ran: noise.
    other=$(awk -v b0="$busy0" -v b1="$busy1" -v c0="$cpu0" -v c1="$cpu1" -v l="$loader_total" \
        'BEGIN { o = (b1 - b0) - (c1 - c0) - l; if (o < 0) o = 0; printf "%.2f", o }')
    RESULTS+=("$NAME $rows_s $values_s $elapsed $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}') $rss $disk $loader_cpu $p99 $other $status")
}

log "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for s in $SYSTEMS; do
    run "$s" http
done
if [[ "$TCP" == 1 ]]; then
    for s in $SYSTEMS; do
        [[ "$s" == influxdb ]] && continue # InfluxDB 1.x has no line protocol over TCP
        run "$s" tcp
    done
fi

# --- the table ---------------------------------------------------------------------

# Sluice's rows/s and CPU seconds, per mode, to compare the peers with.
declare -A REF_ROWS=() REF_CPU=()
for r in "${RESULTS[@]}"; do
    read -r name rows_s _ _ cpu _ <<<"$r"
    case "$name" in sluice) REF_ROWS[http]=$rows_s; REF_CPU[http]=$cpu ;;
        sluice-tcp) REF_ROWS[tcp]=$rows_s; REF_CPU[tcp]=$cpu ;; esac
done

echo
echo "TSBS cpu-only, $SCALE hosts x $DURATION = $ROWS rows ($((ROWS * 10)) values), batches of $BATCH lines, $WORKERS workers$([[ "$GZIP" == 1 ]] && echo ', gzip'); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| system | rows/s | values/s | elapsed s | server CPU s | rows per CPU-s | peak RSS MiB | disk MiB | loader CPU s | p99 batch ms | other CPU s | stored rows | sluice speed ratio | sluice CPU ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
for r in "${RESULTS[@]}"; do
    read -r name rows_s values_s elapsed cpu rss disk loader_cpu p99 other status <<<"$r"
    mode=http; [[ "$name" == *-tcp ]] && mode=tcp
    ref=${REF_ROWS[$mode]:-}; rc=${REF_CPU[$mode]:-}
    awk -v n="$name" -v r="$rows_s" -v v="$values_s" -v e="$elapsed" -v c="$cpu" -v m="$rss" -v d="$disk" \
        -v l="$loader_cpu" -v p="$p99" -v o="$other" -v s="$status" -v ref="$ref" -v rc="$rc" \
        'BEGIN {
            eff = (c > 0) ? sprintf("%.0f", r * e / c) : "n/a";
            speed = (ref != "" && r > 0 && n != "sluice" && n != "sluice-tcp") ? sprintf("%.2fx", ref / r) : "-";
            cpur = (rc != "" && c > 0 && n != "sluice" && n != "sluice-tcp") ? sprintf("%.2fx", rc / c) : "-";
            printf "| %s | %.0f | %.0f | %.2f | %.2f | %s | %s | %s | %.2f | %.1f | %s | %s | %s | %s |\n",
                n, r, v, e, c, eff, m, d, l, p, o, s, speed, cpur
        }'
done
echo
echo "sluice speed ratio = Sluice rows/s / peer rows/s (>1: Sluice faster; tcp rows compare with sluice-tcp)."
echo "sluice CPU ratio = Sluice server CPU s / peer server CPU s (<1: Sluice used less CPU)."
echo "other CPU s = CPU the rest of the machine used meanwhile (noise; steal included)."
[[ "$FAILED" == 0 ]] || die "a system stored a different number of rows than were sent"
