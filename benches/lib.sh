# shellcheck shell=bash
# Variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Shared by benches/ingest.sh, storage.sh, queries.sh, mqtt.sh and kafka.sh:
# setup, process accounting, and how to start, feed, flush and question each
# system.
# Source it after setting:
#   SCRIPT                        name for messages (e.g. storage.sh)
#   SYSTEMS, BASE_PORT, KEEP, DB, SLUICE_SHARDS, SLUICE_BIN (the scripts' defaults)
# Hooks a script may set before starting a system:
#   SLUICE_ARGS=()   extra `sluice serve` arguments
#   INFLUX_SED=()    extra sed expressions applied to InfluxDB's config
#   VM_ARGS=()       extra victoria-metrics flags
#
# Everything listens on and talks to 127.0.0.1 only; every process started
# with start_system is stopped on exit.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
HTTP_PORT=$BASE_PORT
AUX_PORT=$((BASE_PORT + 1))
AUX2_PORT=$((BASE_PORT + 2))
CLK_TCK=$(getconf CLK_TCK)
START_S=1451606400 # 2016-01-01T00:00:00Z, the generator's first timestamp
SLUICE_ARGS=()
INFLUX_SED=()
VM_ARGS=()

die() { echo "$SCRIPT: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
# curl that never uses a proxy and never waits forever.
lc() { curl --noproxy '*' -sS --max-time 600 "$@"; }

want() { [[ " $SYSTEMS " == *" $1 "* ]]; }

# --- setup -----------------------------------------------------------------

# Creates $WORK and arranges for every started server to be stopped, and
# $WORK removed (unless KEEP=1), on exit.
bench_init() { # prefix
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}
bench_cleanup() {
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
        echo "$SCRIPT: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}

duration_seconds() {
    local d=$1 n unit
    n=${d%%[smhdw]}; unit=${d#"$n"}
    [[ "$n" =~ ^[0-9]+$ ]] || die "invalid DURATION $d"
    case "$unit" in
        ""|s) echo "$n" ;; m) echo $((n * 60)) ;; h) echo $((n * 3600)) ;;
        d) echo $((n * 86400)) ;; w) echo $((n * 604800)) ;; *) die "invalid DURATION $d" ;;
    esac
}

# Installs the peers from the Debian archive when SYSTEMS needs them, and
# checks the Sluice binary.
ensure_systems() {
    if want influxdb && ! command -v influxd >/dev/null || want victoriametrics && ! command -v victoria-metrics >/dev/null; then
        [[ $(id -u) == 0 ]] || die "install influxdb and victoria-metrics (apt-get install influxdb victoria-metrics)"
        log "installing peers from the Debian archive"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb victoria-metrics >/dev/null
    fi
    if want sluice; then
        [[ -x "$SLUICE_BIN" ]] || die "no Sluice binary at $SLUICE_BIN (build it with cargo build --release -p sluice, or set SLUICE_BIN)"
        SLUICE_BIN=$(realpath "$SLUICE_BIN") # it is started from its data directory
    fi
}

# Sets BENCH_BIN, building sluice-bench (release) unless it is given.
ensure_bench_bin() {
    if [[ -z "${BENCH_BIN:-}" ]]; then
        log "building sluice-bench"
        cargo build -q -p sluice-bench --release --manifest-path "$ROOT/Cargo.toml"
        BENCH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice-bench"
    fi
    [[ -x "$BENCH_BIN" ]] || die "no sluice-bench at $BENCH_BIN"
}

check_ports_free() {
    local port
    for port in "$HTTP_PORT" "$AUX_PORT" "$AUX2_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port on 127.0.0.1 is in use; set BASE_PORT"
        fi
    done
}

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
    for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Starts system $1 as $NAME in the fresh directory $2, waits until it is
# ready and creates the database.
start_system() { # system dir
    mkdir -p "$2"
    log "$NAME: starting"
    "start_$1" "$2"
    PIDS+=("$PID")
    wait_ready "$READY_URL" "$PID" "$NAME"
    "setup_$1"
}

# Shows the tail of the current server's log and fails.
die_with_log() {
    echo "--- $NAME log (tail) ---" >&2; tail -20 "$WORK/$NAME.log" >&2
    die "$*"
}

# --- the systems -------------------------------------------------------------
# start_<system> starts the server in $1 (a fresh dir), sets PID, WRITE_URL or
# WRITE_TCP, FLUSH_URL and READY_URL. count_<system> prints what it stored.
# data_paths_<system> lists what it keeps on disk under $1. settle_<system>
# makes it write everything out and compact, and returns once the data on
# disk stops changing.

start_sluice() {
    (cd "$1" && exec "$SLUICE_BIN" serve --data-dir "$1/data" \
        --http-addr "127.0.0.1:$HTTP_PORT" --lp-tcp-addr "127.0.0.1:$AUX_PORT" \
        --shards "$SLUICE_SHARDS" "${SLUICE_ARGS[@]}") >"$WORK/$NAME.log" 2>&1 &
    PID=$!
    READY_URL="http://127.0.0.1:$HTTP_PORT/health"
    WRITE_URL="http://127.0.0.1:$HTTP_PORT/write?db=$DB"
    WRITE_TCP="127.0.0.1:$AUX_PORT"
    FLUSH_URL=""
}
setup_sluice() {
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/query" --data-urlencode "q=CREATE DATABASE $DB" >/dev/null
}
# SQL over HTTP; prints the answer in format $2 (default csv).
sluice_sql() { # sql [format]
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/api/v1/sql" --data-urlencode "db=$DB" \
        --data-urlencode "format=${2:-csv}" --data-urlencode "q=$1" -G
}
count_sluice() { # db -> rows
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/api/v1/sql" -H 'Content-Type: application/json' \
        -d "{\"db\":\"$1\",\"sql\":\"select count(*) from cpu\"}" |
        sed -nE 's/.*"rows":\[\[([0-9]+)\].*/\1/p'
}
data_paths_sluice() { echo "$1/data"; }

start_influxdb() {
    local conf="$1/influxdb.conf"
    influxd config 2>/dev/null | sed -E \
        -e "s|/var/lib/influxdb|$1|g" \
        -e "s|^bind-address = .*|bind-address = \"127.0.0.1:$AUX_PORT\"|" \
        -e 's|^reporting-enabled = .*|reporting-enabled = false|' \
        -e 's|^reporting-disabled = .*|reporting-disabled = true|' \
        -e "/^\[http\]/,/^\[/ s|^  bind-address = .*|  bind-address = \"127.0.0.1:$HTTP_PORT\"|" \
        -e '/^\[monitor\]/,/^\[/ s|store-enabled = true|store-enabled = false|' \
        -e 's|bind-address = ":|bind-address = "127.0.0.1:|' \
        "${INFLUX_SED[@]}" >"$conf"
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
data_paths_influxdb() { echo "$1/meta" "$1/data" "$1/wal"; }

start_victoriametrics() {
    # Data from 2016 is outside the default 1-month retention and would be dropped.
    victoria-metrics -httpListenAddr "127.0.0.1:$HTTP_PORT" -storageDataPath "$1/data" \
        -retentionPeriod 100y -influxListenAddr "127.0.0.1:$AUX_PORT" "${VM_ARGS[@]}" \
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
        --data-urlencode "time=$end" --data-urlencode nocache=1 |
        sed -nE 's/.*"value":\[[0-9.]+,"([0-9]+)"\].*/\1/p'
}
# Everything under -storageDataPath but cache/, which holds rebuildable caches
# (written at shutdown).
data_paths_victoriametrics() { find "$1/data" -mindepth 1 -maxdepth 1 ! -name cache -printf '%p ' 2>/dev/null; }

# --- flushing and settling -------------------------------------------------------

now_ms() { echo $((${EPOCHREALTIME/[.,]/} / 1000)); }
STABLE_S=${STABLE_S:-20}             # settled = no change in the data's size for this long
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-900} # give up waiting after this long

# The existing paths among system $1's data paths under $2, one per line.
existing_data_paths() { # system dir
    local paths p
    read -r -a paths <<<"$("data_paths_$1" "$2")"
    for p in "${paths[@]}"; do [[ -e "$p" ]] && echo "$p"; done
    return 0
}
# Sizes of the system's data, in bytes: "disk apparent allocated".
#   apparent:  du -sb, file (and directory) sizes; counts preallocated and
#              sparse space that holds nothing, e.g. InfluxDB's 4 MiB
#              series-file segments
#   allocated: du -s --block-size=1, blocks in use (rounds every file up to a block)
#   disk:      over regular files, the smaller of size and allocated blocks:
#              what the data takes, without holes and without block rounding
data_sizes() { # system dir
    local paths=() disk apparent alloc
    mapfile -t paths < <(existing_data_paths "$1" "$2")
    ((${#paths[@]} > 0)) || { echo "0 0 0"; return 0; }
    disk=$(find "${paths[@]}" -type f -printf '%s %b\n' |
        awk '{ a = $2 * 512; d += ($1 < a) ? $1 : a } END { printf "%d", d }')
    apparent=$(du -sb -c "${paths[@]}" | awk 'END { print $1 }')
    alloc=$(du -s --block-size=1 -c "${paths[@]}" | awk 'END { print $1 }')
    echo "$disk $apparent $alloc"
}

# Waits until the size and the file list under the system's data stop
# changing for $3 seconds (default STABLE_S); fails after SETTLE_TIMEOUT.
wait_stable() { # system dir [seconds]
    local need=$((${3:-$STABLE_S} * 1000)) started now last="" cur since paths=()
    started=$(now_ms); since=$started
    while :; do
        kill -0 "$PID" 2>/dev/null || die_with_log "$NAME exited while settling"
        mapfile -t paths < <(existing_data_paths "$1" "$2")
        # Names, sizes and mtimes of every file: catches rewrites of equal size.
        # (Files may vanish between listing and stat: find's complaints are ignored.)
        cur=$( ( ((${#paths[@]} == 0)) || find "${paths[@]}" -type f -printf '%p %s %T@\n' 2>/dev/null || true) | sort | cksum)
        now=$(now_ms)
        if [[ "$cur" != "$last" ]]; then last=$cur; since=$now; fi
        if ((now - since >= need)); then return 0; fi
        if ((now - started >= SETTLE_TIMEOUT * 1000)); then
            die_with_log "$NAME: data under $2 still changing after ${SETTLE_TIMEOUT}s (SETTLE_TIMEOUT)"
        fi
        sleep 1
    done
}

# `POST /api/v1/flush`: every buffer into compressed chunks, then compaction;
# 200 when done. Without the endpoint (older builds), wait for the periodic
# flush (storage.flush_interval_secs, 60 s by default) instead.
settle_sluice() { # dir
    local code
    code=$(curl --noproxy '*' -sS --max-time 3600 -o "$WORK/$NAME.flush" -w '%{http_code}' \
        -XPOST "http://127.0.0.1:$HTTP_PORT/api/v1/flush") || die_with_log "$NAME: POST /api/v1/flush failed"
    case "$code" in
        2??) log "$NAME: flushed: $(cat "$WORK/$NAME.flush")"; wait_stable sluice "$1" ;;
        404|405)
            log "$NAME: no /api/v1/flush (HTTP $code); waiting for the periodic flush instead"
            wait_stable sluice "$1" $((STABLE_S > 90 ? STABLE_S : 90)) ;;
        *) die_with_log "$NAME: POST /api/v1/flush answered HTTP $code: $(head -c 500 "$WORK/$NAME.flush")" ;;
    esac
}
# InfluxDB has no flush call: it snapshots its cache and fully compacts a
# shard once no write came for the cold durations INFLUX_SETTLE_SED shortens.
INFLUX_SETTLE_SED=(
    -e 's|^  cache-snapshot-write-cold-duration = .*|  cache-snapshot-write-cold-duration = "5s"|'
    -e 's|^  compact-full-write-cold-duration = .*|  compact-full-write-cold-duration = "10s"|'
)
settle_influxdb() { # dir
    grep -q 'compact-full-write-cold-duration = "10s"' "$1/influxdb.conf" ||
        die "InfluxDB was started without INFLUX_SETTLE_SED; it would not compact"
    wait_stable influxdb "$1"
    local tsm tmp
    tsm=$(find "$1/data" -name '*.tsm' | wc -l)
    tmp=$(find "$1/data" -name '*.tmp' | wc -l)
    ((tmp == 0)) || die_with_log "$NAME: compaction files (*.tmp) left after settling"
    log "$NAME: settled: $tsm TSM file(s), WAL $(du -sb "$1/wal" | cut -f1) bytes"
    ((tsm > 0)) || die_with_log "$NAME: no TSM file after settling: the cache was not snapshotted"
}
settle_victoriametrics() { # dir
    lc -f "http://127.0.0.1:$HTTP_PORT/internal/force_flush" >/dev/null ||
        die_with_log "$NAME: /internal/force_flush failed"
    curl --noproxy '*' -sS -f --max-time 3600 "http://127.0.0.1:$HTTP_PORT/internal/force_merge" >/dev/null ||
        die_with_log "$NAME: /internal/force_merge failed"
    wait_stable victoriametrics "$1"
}
