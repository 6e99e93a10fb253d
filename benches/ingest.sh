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

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
HTTP_PORT=$BASE_PORT
AUX_PORT=$((BASE_PORT + 1))
AUX2_PORT=$((BASE_PORT + 2))
CLK_TCK=$(getconf CLK_TCK)

die() { echo "ingest.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
# curl that never uses a proxy and never waits forever.
lc() { curl --noproxy '*' -sS --max-time 600 "$@"; }

# --- setup -----------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-ingest.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] || continue
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    if [[ "$KEEP" == 1 ]]; then
        echo "ingest.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

duration_seconds() {
    local d=$1 n unit
    n=${d%%[smhdw]}; unit=${d#"$n"}
    [[ "$n" =~ ^[0-9]+$ ]] || die "invalid DURATION $d"
    case "$unit" in
        ""|s) echo "$n" ;; m) echo $((n * 60)) ;; h) echo $((n * 3600)) ;;
        d) echo $((n * 86400)) ;; w) echo $((n * 604800)) ;; *) die "invalid DURATION $d" ;;
    esac
}
DURATION_S=$(duration_seconds "$DURATION")
ROWS=$((SCALE * (DURATION_S / 10)))
START_S=1451606400 # 2016-01-01T00:00:00Z

want() { [[ " $SYSTEMS " == *" $1 "* ]]; }

if want influxdb && ! command -v influxd >/dev/null || want victoriametrics && ! command -v victoria-metrics >/dev/null; then
    [[ $(id -u) == 0 ]] || die "install influxdb and victoria-metrics (apt-get install influxdb victoria-metrics)"
    log "installing peers from the Debian archive"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb victoria-metrics >/dev/null
fi
if want sluice; then
    [[ -x "$SLUICE_BIN" ]] || die "no Sluice binary at $SLUICE_BIN (build it with cargo build --release -p sluice, or set SLUICE_BIN)"
fi

if [[ -z "${BENCH_BIN:-}" ]]; then
    log "building sluice-bench"
    cargo build -q -p sluice-bench --release --manifest-path "$ROOT/Cargo.toml"
    BENCH_BIN="$ROOT/target/release/sluice-bench"
fi

for port in "$HTTP_PORT" "$AUX_PORT" "$AUX2_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is in use; set BASE_PORT"
    fi
done

if [[ -n "${DATA_FILE:-}" ]]; then
    DATA=$DATA_FILE
else
    DATA="$WORK/cpu-$SCALE-$DURATION.lp"
    log "generating $ROWS rows ($SCALE hosts x $DURATION) into $DATA"
    "$BENCH_BIN" generate --scale "$SCALE" --duration "$DURATION" --seed "$SEED" --out "$DATA" >/dev/null
fi

# --- process accounting ----------------------------------------------------

# utime + stime of a process, in seconds.
cpu_seconds() {
    local rest
    rest=$(sed 's/^.*) //' "/proc/$1/stat")
    # After "pid (comm) ", utime and stime are fields 12 and 13.
    awk -v hz="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / hz }' <<<"$rest"
}
# CPU seconds the whole machine has been busy (steal included: it is contention too).
machine_busy_seconds() {
    awk -v hz="$CLK_TCK" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}
# Peak resident set size, in MiB.
peak_rss_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

wait_ready() { # url pid name
    local i
    for i in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || die "$3 exited during startup; see its log below
$(tail -20 "$WORK/$3.log")"
        if lc -o /dev/null -f "$1" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    die "$3 did not become ready at $1"
}

stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    local i
    for i in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# --- the systems -------------------------------------------------------------
# start_<system> starts the server in $1 (a fresh dir), sets PID, WRITE_URL or
# WRITE_TCP, FLUSH_URL and READY_URL. count_<system> prints what it stored.

start_sluice() {
    (cd "$1" && exec "$SLUICE_BIN" serve --data-dir "$1/data" \
        --http-addr "127.0.0.1:$HTTP_PORT" --lp-tcp-addr "127.0.0.1:$AUX_PORT" \
        --shards "$SLUICE_SHARDS") >"$WORK/$NAME.log" 2>&1 &
    PID=$!
    READY_URL="http://127.0.0.1:$HTTP_PORT/health"
    WRITE_URL="http://127.0.0.1:$HTTP_PORT/write?db=$DB"
    WRITE_TCP="127.0.0.1:$AUX_PORT"
    FLUSH_URL=""
}
setup_sluice() {
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/query" --data-urlencode "q=CREATE DATABASE $DB" >/dev/null
}
count_sluice() { # db -> rows
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/api/v1/sql" -H 'Content-Type: application/json' \
        -d "{\"db\":\"$1\",\"sql\":\"select count(*) from cpu\"}" |
        sed -nE 's/.*"rows":\[\[([0-9]+)\].*/\1/p'
}

start_influxdb() {
    local conf="$1/influxdb.conf"
    influxd config 2>/dev/null | sed -E \
        -e "s|/var/lib/influxdb|$1|g" \
        -e "s|^bind-address = .*|bind-address = \"127.0.0.1:$AUX_PORT\"|" \
        -e 's|^reporting-enabled = .*|reporting-enabled = false|' \
        -e 's|^reporting-disabled = .*|reporting-disabled = true|' \
        -e "/^\[http\]/,/^\[/ s|^  bind-address = .*|  bind-address = \"127.0.0.1:$HTTP_PORT\"|" \
        -e '/^\[monitor\]/,/^\[/ s|store-enabled = true|store-enabled = false|' \
        -e 's|bind-address = ":|bind-address = "127.0.0.1:|' >"$conf"
    grep -q "^  bind-address = \"127.0.0.1:$HTTP_PORT\"" "$conf" || die "could not set InfluxDB's HTTP address in $conf"
    grep -q '/var/lib/influxdb' "$conf" && die "InfluxDB config still points at /var/lib/influxdb"
    grep -Eq '^reporting-(enabled = false|disabled = true)' "$conf" || die "could not disable InfluxDB reporting"
    env -u INFLUXDB_HTTP_BIND_ADDRESS influxd run -config "$conf" >"$WORK/$NAME.log" 2>&1 &
    PID=$!
    READY_URL="http://127.0.0.1:$HTTP_PORT/ping"
    WRITE_URL="http://127.0.0.1:$HTTP_PORT/write?db=$DB"
    WRITE_TCP=""
    FLUSH_URL=""
}
setup_influxdb() {
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/query" --data-urlencode "q=CREATE DATABASE $DB" >/dev/null
}
count_influxdb() {
    lc -f -G "http://127.0.0.1:$HTTP_PORT/query" --data-urlencode "db=$DB" \
        --data-urlencode 'q=SELECT count(usage_user) FROM cpu' |
        sed -nE 's/.*"values":\[\["[^"]*",([0-9]+)\]\].*/\1/p'
}

start_victoriametrics() {
    # Data from 2016 is outside the default 1-month retention and would be dropped.
    victoria-metrics -httpListenAddr "127.0.0.1:$HTTP_PORT" -storageDataPath "$1/data" \
        -retentionPeriod 100y -influxListenAddr "127.0.0.1:$AUX_PORT" \
        >"$WORK/$NAME.log" 2>&1 &
    PID=$!
    READY_URL="http://127.0.0.1:$HTTP_PORT/health"
    WRITE_URL="http://127.0.0.1:$HTTP_PORT/write?db=$DB"
    WRITE_TCP="127.0.0.1:$AUX_PORT"
    # VictoriaMetrics acknowledges before data is on disk; flushing is part of the timed load.
    FLUSH_URL="http://127.0.0.1:$HTTP_PORT/internal/force_flush"
}
setup_victoriametrics() { :; }
count_victoriametrics() {
    # Samples of one field = rows; the window covers the whole data set.
    local end=$((START_S + DURATION_S)) window=$((DURATION_S + 60))
    lc -f -G "http://127.0.0.1:$HTTP_PORT/api/v1/query" \
        --data-urlencode "query=sum(count_over_time(cpu_usage_user[${window}s]))" \
        --data-urlencode "time=$end" |
        sed -nE 's/.*"value":\[[0-9.]+,"([0-9]+)"\].*/\1/p'
}

# --- running -------------------------------------------------------------------

RESULTS=()
FAILED=0
run() { # system mode(http|tcp)
    local system=$1 mode=$2
    NAME=$system; [[ "$mode" == tcp ]] && NAME="$system-tcp"
    local dir="$WORK/$NAME"
    mkdir -p "$dir"
    log "$NAME: starting"
    "start_$system" "$dir"
    PIDS+=("$PID")
    wait_ready "$READY_URL" "$PID" "$NAME"
    "setup_$system"
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
        echo "--- $NAME log (tail) ---" >&2; tail -20 "$WORK/$NAME.log" >&2
        die "$NAME: load failed"
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
