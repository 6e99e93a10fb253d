#!/usr/bin/env bash
# MQTT benchmark: Sluice's built-in broker (publish -> durable -> visible in
# SQL) side by side with mosquitto (publish -> delivered to one subscriber),
# on the same TSBS cpu-only line protocol messages. See benches/README.md.
#
# For each case QoS (0, 1) x lines per message (1, 100):
#   sluice:    fresh data dir; `sluice-bench mqtt` publishes to ingest/$DB; then
#              `SELECT count(*) FROM cpu` is polled until every row is visible.
#              Rate = messages (rows) / (first publish -> all rows visible).
#   mosquitto: fresh broker; `sluice-bench mqtt --subscribe` publishes the same
#              messages while one subscriber receives them.
#              Rate = messages / (first publish -> last message delivered).
#
# Environment:
#   QOS_LIST="0 1" LINES_LIST="1 100"      the cases
#   MESSAGES_1=100000 MESSAGES_100=5000    messages per case with 1 and 100 lines
#   MESSAGES=                              if set, the default for both of the above
#   CONNECTIONS=4 INFLIGHT=100             publishing connections, QoS 1 window per connection
#   SCALE=100 SEED=1                       generated data: hosts, RNG seed
#   SYSTEMS="sluice mosquitto"             which systems, in order
#   ROUNDS=1                               runs of each case per system, interleaved
#                                          (sluice, mosquitto, sluice, ...); the table
#                                          shows each system's median run and the range
#   SLUICE_BIN=${CARGO_TARGET_DIR:-<repo>/target}/release/sluice  (cargo build --release -p sluice)
#   SLUICE_SHARDS=$(nproc)                 --shards for Sluice
#   POLL_S=0.05                            interval between row counts
#   VISIBLE_TIMEOUT=600                    fail if rows are not all visible this long after the load
#   LOAD_TIMEOUT=1800                      fail if a load takes longer (seconds)
#   BASE_PORT=28000                        ports BASE_PORT..BASE_PORT+3, all on 127.0.0.1
#   BENCH_BIN=                             prebuilt sluice-bench (else built with cargo)
#   KEEP=0                                 1 keeps the temp dir (data dirs, configs, server logs)
#
# Everything listens on and talks to 127.0.0.1 only. Every server started here
# is stopped on exit.
set -euo pipefail

QOS_LIST=${QOS_LIST:-"0 1"}
LINES_LIST=${LINES_LIST:-"1 100"}
MESSAGES_1=${MESSAGES_1:-${MESSAGES:-100000}}
MESSAGES_100=${MESSAGES_100:-${MESSAGES:-5000}}
CONNECTIONS=${CONNECTIONS:-4}
INFLIGHT=${INFLIGHT:-100}
SCALE=${SCALE:-100}
SEED=${SEED:-1}
SLUICE_SHARDS=${SLUICE_SHARDS:-$(nproc)}
SYSTEMS=${SYSTEMS:-"sluice mosquitto"}
POLL_S=${POLL_S:-0.05}
VISIBLE_TIMEOUT=${VISIBLE_TIMEOUT:-600}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-1800}
BASE_PORT=${BASE_PORT:-28000}
KEEP=${KEEP:-0}
ROUNDS=${ROUNDS:-1}
DB=bench
TOPIC="ingest/$DB"

SCRIPT=mqtt.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
MQTT_PORT=$AUX2_PORT          # Sluice's broker
MOSQ_PORT=$((BASE_PORT + 3))  # mosquitto

for s in $SYSTEMS; do
    case "$s" in sluice|mosquitto) ;; *) die "unknown system $s in SYSTEMS (sluice, mosquitto)" ;; esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not $ROUNDS"
for q in $QOS_LIST; do [[ "$q" == 0 || "$q" == 1 ]] || die "QOS_LIST holds $q: use 0 and/or 1"; done
for l in $LINES_LIST; do [[ "$l" == 1 || "$l" == 100 ]] || die "LINES_LIST holds $l: use 1 and/or 100"; done

bench_init sluice-mqtt

ensure_systems
if want mosquitto && ! command -v mosquitto >/dev/null; then
    [[ $(id -u) == 0 ]] || die "install mosquitto (apt-get install mosquitto)"
    log "installing mosquitto from the Debian archive"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
ensure_bench_bin
check_ports_free
if (exec 3<>"/dev/tcp/127.0.0.1/$MOSQ_PORT") 2>/dev/null; then
    die "port $MOSQ_PORT on 127.0.0.1 is in use; set BASE_PORT"
fi

messages_for() { # lines
    case "$1" in 1) echo "$MESSAGES_1" ;; 100) echo "$MESSAGES_100" ;; esac
}

now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

# The first value of a one-row SQL answer, or nothing (e.g. while the table
# does not exist yet).
sluice_scalar() { # sql
    lc -f -XPOST "http://127.0.0.1:$HTTP_PORT/api/v1/sql" -H 'Content-Type: application/json' \
        -d "{\"db\":\"$DB\",\"sql\":\"$1\"}" 2>/dev/null |
        sed -nE 's/.*"rows":\[\[([0-9]+)\].*/\1/p' || true
}

# One `sluice-bench mqtt` run; prints its RESULT line, or shows its output
# and the server's log and fails.
publish() { # port qos lines messages [--subscribe]
    local out
    if ! out=$("$BENCH_BIN" mqtt --broker "127.0.0.1:$1" --topic "$TOPIC" --qos "$2" --lines "$3" \
        --messages "$4" --connections "$CONNECTIONS" --inflight "$INFLIGHT" --scale "$SCALE" \
        --seed "$SEED" --timeout "$LOAD_TIMEOUT" "${@:5}" 2>&1); then
        echo "$out" >&2
        die_with_log "$NAME: the MQTT load failed"
    fi
    grep -v '^RESULT' <<<"$out" | sed 's/^/   /' >&2
    grep '^RESULT' <<<"$out"
}

field() { # key result-line
    sed -nE "s/.* $1=([^ ]*).*/\\1/p" <<<"$2"
}

declare -A RES=()
FAILED=0

run_sluice() { # qos lines messages round
    local qos=$1 lines=$2 msgs=$3 rows=$(($2 * $3)) round=$4
    NAME="sluice-qos$qos-lines$lines-r$round"
    SLUICE_ARGS=(--mqtt-addr "127.0.0.1:$MQTT_PORT")
    start_system sluice "$WORK/$NAME"
    local cpu0 cpu1 result start_us now count="" deadline status=ok
    cpu0=$(cpu_seconds "$PID")
    log "$NAME: publishing $msgs messages ($rows rows) at QoS $qos"
    result=$(publish "$MQTT_PORT" "$qos" "$lines" "$msgs")
    start_us=$(($(field start_unix_ns "$result") / 1000))
    # Poll until every row is visible. The time taken is an upper bound: up
    # to one poll interval (plus one query) late.
    deadline=$(($(now_us) + VISIBLE_TIMEOUT * 1000000))
    while :; do
        kill -0 "$PID" 2>/dev/null || die_with_log "$NAME exited while rows were awaited"
        count=$(sluice_scalar "select count(*) from cpu")
        now=$(now_us)
        [[ "$count" == "$rows" ]] && break
        if [[ -n "$count" ]] && ((count > rows)); then
            status="MISMATCH($count)"
            break
        fi
        if ((now > deadline)); then
            status="MISMATCH(${count:-none})"
            break
        fi
        sleep "$POLL_S"
    done
    cpu1=$(cpu_seconds "$PID")
    if [[ "$status" == ok ]]; then
        # Still exactly right a moment later: nothing was stored twice.
        sleep 1
        count=$(sluice_scalar "select count(*) from cpu")
        [[ "$count" == "$rows" ]] || status="MISMATCH($count)"
    fi
    local dead
    dead=$(sluice_scalar "select count(*) from system.dead_letters")
    [[ "${dead:-0}" == 0 ]] || status="$status,dead_letters=$dead"
    if [[ "$status" != ok ]]; then
        FAILED=1
        echo "--- $NAME log (tail) ---" >&2; tail -20 "$WORK/$NAME.log" >&2
        echo "$SCRIPT: $NAME: stored ${count:-an unknown number of} rows, sent $rows; dead letters ${dead:-?}" >&2
    fi
    # Anything the server complained about while it ran.
    local complaints
    complaints=$(grep -ciE '\b(warn|error)\b' "$WORK/$NAME.log" || true)
    if ((complaints > 0)); then
        log "$NAME: $complaints warning/error lines in the server log, e.g.:"
        grep -iE '\b(warn|error)\b' "$WORK/$NAME.log" | head -5 >&2
    fi
    local secs cpu rates="- -"
    secs=$(awk -v a="$start_us" -v b="$now" 'BEGIN { printf "%.4f", (b - a) / 1e6 }')
    cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}')
    if [[ "$status" == ok ]]; then
        log "$NAME: all $rows rows visible ${secs}s after the first publish; server CPU ${cpu}s"
        rates=$(awk -v m="$msgs" -v r="$rows" -v s="$secs" 'BEGIN { printf "%.0f %.0f", m / s, r / s }')
    else
        log "$NAME: ${count:-no} rows of $rows visible after ${secs}s; no rate"
    fi
    stop "$PID"
    RES[sluice/$qos/$lines/$round]="$rates $(field msgs_per_s "$result") $secs $cpu $(field loader_cpu_pct "$result") $status $complaints"
}

start_mosquitto() { # dir
    mkdir -p "$1"
    # Nothing dropped: mosquitto discards messages (QoS 0 included) for a
    # client whose queue holds max_queued_messages (default 1000), and the
    # subscriber must see every one. The subscriber gets the same window the
    # publishers have (default 20).
    cat >"$1/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
max_queued_messages 0
max_inflight_messages $INFLIGHT
EOF
    log "$NAME: starting"
    mosquitto -c "$1/mosquitto.conf" >"$WORK/$NAME.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    local i
    for i in $(seq 1 100); do
        kill -0 "$PID" 2>/dev/null || die_with_log "$NAME exited during startup"
        if (exec 3<>"/dev/tcp/127.0.0.1/$MOSQ_PORT") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die_with_log "$NAME did not listen on 127.0.0.1:$MOSQ_PORT"
}

run_mosquitto() { # qos lines messages round
    local qos=$1 lines=$2 msgs=$3 round=$4
    NAME="mosquitto-qos$qos-lines$lines-r$round"
    start_mosquitto "$WORK/$NAME"
    local cpu0 cpu1 result
    cpu0=$(cpu_seconds "$PID")
    log "$NAME: publishing $msgs messages ($((lines * msgs)) rows) at QoS $qos to one subscriber"
    result=$(publish "$MOSQ_PORT" "$qos" "$lines" "$msgs" --subscribe)
    cpu1=$(cpu_seconds "$PID")
    stop "$PID"
    RES[mosquitto/$qos/$lines/$round]="$(field delivered_msgs_per_s "$result") $(field delivered_rows_per_s "$result") \
$(field msgs_per_s "$result") $(field delivered_secs "$result") $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}') \
$(field loader_cpu_pct "$result")"
}

log "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for qos in $QOS_LIST; do
    for lines in $LINES_LIST; do
        msgs=$(messages_for "$lines")
        for round in $(seq 1 "$ROUNDS"); do
            if want sluice; then run_sluice "$qos" "$lines" "$msgs" "$round"; fi
            if want mosquitto; then run_mosquitto "$qos" "$lines" "$msgs" "$round"; fi
        done
    done
done

# The result of a system's median run of a case (by msgs/s, the first field;
# a failed run counts as 0), then that case's lowest and highest msgs/s.
median_run() { # system qos lines
    local r rate runs=()
    for r in $(seq 1 "$ROUNDS"); do
        rate=$(cut -d' ' -f1 <<<"${RES[$1/$2/$3/$r]:--}")
        [[ "$rate" =~ ^[0-9.]+$ ]] || rate=0
        runs+=("$rate $r")
    done
    local sorted mid
    sorted=$(printf '%s\n' "${runs[@]}" | sort -n)
    mid=$(sed -n "$(((ROUNDS + 1) / 2))p" <<<"$sorted" | cut -d' ' -f2)
    echo "${RES[$1/$2/$3/$mid]:-}|$(head -1 <<<"$sorted" | cut -d' ' -f1)-$(tail -1 <<<"$sorted" | cut -d' ' -f1)"
}

# --- the table ---------------------------------------------------------------------

echo
echo "MQTT, TSBS cpu-only line protocol ($SCALE hosts), $CONNECTIONS publishing connections, in-flight window $INFLIGHT; $(nproc) cores; median of $ROUNDS interleaved run(s) per system; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| case | sluice msgs/s | sluice rows/s | mosquitto msgs/s (delivered) | ratio | sluice range msgs/s | mosquitto range msgs/s | messages | sluice publish->ack msgs/s | sluice s | mosquitto s | sluice CPU s | mosquitto CPU s | loader % of a core (sluice / mosquitto) | stored rows | sluice log warnings |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
for qos in $QOS_LIST; do
    for lines in $LINES_LIST; do
        s_run=$(median_run sluice "$qos" "$lines")
        m_run=$(median_run mosquitto "$qos" "$lines")
        s_range=${s_run##*|} m_range=${m_run##*|}
        s_run=${s_run%|*} m_run=${m_run%|*}
        want sluice || s_range=-
        want mosquitto || m_range=-
        read -r s_msgs s_rows s_ack s_secs s_cpu s_loader s_status s_warn <<<"${s_run:-- - - - - - - -}"
        read -r m_msgs _ _ m_secs m_cpu m_loader <<<"${m_run:-- - - - - -}"
        ratio=$(awk -v a="$s_msgs" -v b="$m_msgs" 'BEGIN { if (a ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else printf "-" }')
        echo "| QoS $qos, $lines line$([[ $lines == 1 ]] || echo s)/msg | $s_msgs | $s_rows | $m_msgs | $ratio | $s_range | $m_range | $(messages_for "$lines") | $s_ack | $s_secs | $m_secs | $s_cpu | $m_cpu | $s_loader / $m_loader | $s_status | $s_warn |"
    done
done
echo
echo "sluice: first publish -> every row visible to SELECT count(*) (QoS 1 PUBACKs are sent after fsync);"
echo "mosquitto: first publish -> every message delivered to one subscriber (in memory, persistence off)."
echo "ratio = sluice msgs/s / mosquitto msgs/s (>1: Sluice faster). sluice publish->ack: until the last PUBACK (QoS 1) or the last PUBLISH written (QoS 0)."
echo "loader % of a core: sluice-bench's own CPU while it ran; near 100% x its threads means the client, not the broker, set the pace."
[[ "$FAILED" == 0 ]] || die "Sluice stored a different number of rows than were sent (see above)"
