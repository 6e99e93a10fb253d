#!/usr/bin/env bash
# Query latency benchmark: TSBS-style cpu-only queries against Sluice,
# InfluxDB 1.x and VictoriaMetrics, each holding the same data, flushed and
# compacted. Every query runs WARMUP times untimed, then RUNS times timed; the
# median is reported, with the answer's row count checked against what the
# data implies. See benches/README.md.
#
# Environment:
#   SCALE=100 DURATION=1d SEED=1     data (full-precision floats): hosts, time span, RNG seed
#   SYSTEMS="sluice influxdb victoriametrics"   which systems, in order
#   WARMUP=2 RUNS=15                 untimed and timed runs per query
#   QUERIES="single-groupby-1-1-1 double-groupby-5 lastpoint lastpoint-distinct-on count high-cpu"
#   HOST=host_<17 mod SCALE>         the host of single-groupby and high-cpu
#   WORKERS=4 BATCH=5000             loader
#   SLUICE_BIN=<repo>/target/release/sluice  (cargo build --release -p sluice)
#   SLUICE_SHARDS=$(nproc)           --shards for Sluice
#   STABLE_S=20 SETTLE_TIMEOUT=900   settling after the load (as in storage.sh)
#   BASE_PORT=28000                  ports BASE_PORT..BASE_PORT+2, all on 127.0.0.1
#   DATA_FILE=                       reuse a generated file (must match SCALE, DURATION)
#   BENCH_BIN=                       prebuilt sluice-bench (else built with cargo)
#   KEEP=0                           1 keeps the temp dir (data dirs, server logs)
#
# Each system runs alone: start, load, flush and compact, query, stop.
# Everything listens on and talks to 127.0.0.1 only. Every server started here
# is stopped on exit.
set -euo pipefail

SCALE=${SCALE:-100}
DURATION=${DURATION:-1d}
SEED=${SEED:-1}
WARMUP=${WARMUP:-2}
RUNS=${RUNS:-15}
QUERIES=${QUERIES:-"single-groupby-1-1-1 double-groupby-5 lastpoint lastpoint-distinct-on count high-cpu"}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-5000}
SLUICE_SHARDS=${SLUICE_SHARDS:-$(nproc)}
SYSTEMS=${SYSTEMS:-"sluice influxdb victoriametrics"}
BASE_PORT=${BASE_PORT:-28000}
KEEP=${KEEP:-0}
DB=bench

SCRIPT=queries.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}

bench_init sluice-queries
DURATION_S=$(duration_seconds "$DURATION")
ROWS=$((SCALE * (DURATION_S / 10)))
((DURATION_S >= 3600)) || die "DURATION must be at least 1h"
HOST=${HOST:-host_$((17 % SCALE))}
[[ "$HOST" =~ ^host_[0-9]+$ ]] || die "HOST must look like host_N"

# --- time windows (whole hours, inside the data) -------------------------------------
# single-groupby: 1 hour starting a third of the way in (08:00-09:00 for 1d).
# double-groupby, high-cpu: 12 hours (or the whole span, if shorter) centred
# in the data (06:00-18:00 for 1d).
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
H1_FROM=$((START_S + DURATION_S / 3 / 3600 * 3600)); H1_TO=$((H1_FROM + 3600))
H12_LEN=$((DURATION_S < 43200 ? DURATION_S / 3600 * 3600 : 43200))
H12_FROM=$((START_S + (DURATION_S - H12_LEN) / 2 / 3600 * 3600)); H12_TO=$((H12_FROM + H12_LEN))
END_S=$((START_S + DURATION_S))
WIDE=$((DURATION_S + 60)) # a PromQL window that holds every sample
for q in $QUERIES; do
    case "$q" in single-groupby-1-1-1|double-groupby-5|lastpoint|lastpoint-distinct-on|count|high-cpu) ;;
        *) die "unknown query $q in QUERIES" ;; esac
done

ensure_systems
ensure_bench_bin
check_ports_free

if [[ -n "${DATA_FILE:-}" ]]; then
    DATA=$DATA_FILE
else
    DATA="$WORK/cpu-$SCALE-$DURATION-full.lp"
    log "generating $ROWS rows ($SCALE hosts x $DURATION, full-precision values)"
    "$BENCH_BIN" generate --scale "$SCALE" --duration "$DURATION" --seed "$SEED" --values full --out "$DATA" >/dev/null
fi

# What each answer must hold. high-cpu's is counted from the file: rows of
# $HOST in the 12-hour window with usage_user > 90.
HIGH_CPU_ROWS=$(grep -F "cpu,hostname=$HOST," "$DATA" | awk -v from="$H12_FROM" -v to="$H12_TO" '
    { ts = substr($3, 1, length($3) - 9) + 0; split($2, f, ",")
      for (i in f) if (f[i] ~ /^usage_user=/) v = substr(f[i], 12) + 0
      if (ts >= from && ts < to && v > 90) n++ }
    END { print n + 0 }')
declare -A EXPECT=(
    [single-groupby-1-1-1]=60
    [double-groupby-5]=$((H12_LEN * SCALE / 3600))
    [lastpoint]=$SCALE
    [lastpoint-distinct-on]=$SCALE
    [count]=1
    [high-cpu]=$HIGH_CPU_ROWS
)
((HIGH_CPU_ROWS > 0)) || log "note: $HOST has no rows with usage_user > 90 between $(iso "$H12_FROM") and $(iso "$H12_TO"); high-cpu returns nothing (set HOST)"

# --- the queries -----------------------------------------------------------------------
# query_def <system> <query> sets URL, METHOD, KIND and PARAMS; fails when the
# system has no such query.

FIVE="usage_user usage_system usage_idle usage_nice usage_iowait"
query_def() {
    local base="http://127.0.0.1:$HTTP_PORT" sql="" q=""
    PARAMS=()
    case "$1" in
        sluice)
            URL="$base/api/v1/sql"; METHOD="post"; KIND=sluice
            case "$2" in
                single-groupby-1-1-1) sql="SELECT date_bin(INTERVAL '1 minute', time) AS minute, max(usage_user) AS max_usage_user FROM cpu WHERE hostname = '$HOST' AND time >= TIMESTAMP '$(iso "$H1_FROM")' AND time < TIMESTAMP '$(iso "$H1_TO")' GROUP BY 1 ORDER BY 1" ;;
                double-groupby-5)
                    local f cols=""
                    for f in $FIVE; do cols+=", avg($f) AS mean_$f"; done
                    sql="SELECT date_bin(INTERVAL '1 hour', time) AS hour, hostname$cols FROM cpu WHERE time >= TIMESTAMP '$(iso "$H12_FROM")' AND time < TIMESTAMP '$(iso "$H12_TO")' GROUP BY 1, 2 ORDER BY 1, 2" ;;
                lastpoint) sql="SELECT * FROM latest('cpu')" ;;
                lastpoint-distinct-on) sql="SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC" ;;
                count) sql="SELECT count(*) FROM cpu" ;;
                high-cpu) sql="SELECT * FROM cpu WHERE usage_user > 90 AND hostname = '$HOST' AND time >= TIMESTAMP '$(iso "$H12_FROM")' AND time < TIMESTAMP '$(iso "$H12_TO")'" ;;
            esac
            PARAMS=(--param "db=$DB" --param format=json --param "q=$sql")
            ;;
        influxdb)
            URL="$base/query"; METHOD="get"; KIND=influx
            case "$2" in
                single-groupby-1-1-1) q="SELECT max(usage_user) FROM cpu WHERE hostname = '$HOST' AND time >= '$(iso "$H1_FROM")' AND time < '$(iso "$H1_TO")' GROUP BY time(1m)" ;;
                double-groupby-5)
                    local f cols=""
                    for f in $FIVE; do cols+="${cols:+, }mean($f)"; done
                    q="SELECT $cols FROM cpu WHERE time >= '$(iso "$H12_FROM")' AND time < '$(iso "$H12_TO")' GROUP BY time(1h), hostname" ;;
                lastpoint) q="SELECT * FROM cpu GROUP BY hostname ORDER BY time DESC LIMIT 1" ;;
                count) q="SELECT count(usage_user) FROM cpu" ;;
                high-cpu) q="SELECT * FROM cpu WHERE usage_user > 90.0 AND hostname = '$HOST' AND time >= '$(iso "$H12_FROM")' AND time < '$(iso "$H12_TO")'" ;;
                *) return 1 ;;
            esac
            PARAMS=(--param "db=$DB" --param "q=$q")
            ;;
        victoriametrics)
            METHOD="get"; KIND=prom
            # Range queries are evaluated at the end of each bucket: a window
            # [1m] at T holds (T-1m, T], so T = bucket start + 50 s covers the
            # SQL bucket [start, start+1m) of 10 s samples exactly.
            case "$2" in
                single-groupby-1-1-1)
                    URL="$base/api/v1/query_range"
                    PARAMS=(--param "query=max_over_time(cpu_usage_user{hostname=\"$HOST\"}[1m])"
                        --param "start=$((H1_FROM + 50))" --param "end=$((H1_TO - 10))" --param step=60) ;;
                double-groupby-5)
                    URL="$base/api/v1/query_range"
                    PARAMS=(--param "query=avg_over_time({__name__=~\"cpu_(${FIVE// /|})\"}[1h]) keep_metric_names"
                        --param "start=$((H12_FROM + 3590))" --param "end=$((H12_TO - 10))" --param step=3600) ;;
                lastpoint)
                    URL="$base/api/v1/query"
                    PARAMS=(--param "query=last_over_time({__name__=~\"cpu_usage_.*\"}[${WIDE}s]) keep_metric_names" --param "time=$END_S") ;;
                count)
                    URL="$base/api/v1/query"
                    PARAMS=(--param "query=sum(count_over_time(cpu_usage_user[${WIDE}s]))" --param "time=$END_S") ;;
                high-cpu)
                    URL="$base/api/v1/query_range"
                    PARAMS=(--param "query={__name__=~\"cpu_usage_.*\",hostname=\"$HOST\"} and on(hostname) (cpu_usage_user{hostname=\"$HOST\"} > 90)"
                        --param "start=$H12_FROM" --param "end=$((H12_TO - 10))" --param step=10) ;;
                *) return 1 ;;
            esac
            PARAMS+=(--param nocache=1)
            ;;
    esac
}

# --- running -----------------------------------------------------------------------------

declare -A MEDIAN=() GOT_ROWS=()
FAILED=0
fail() { echo "$SCRIPT: $*" >&2; FAILED=1; }

run() { # system
    local system=$1
    NAME=$system
    local dir="$WORK/$NAME"
    INFLUX_SED=(); VM_ARGS=()
    [[ "$system" == influxdb ]] && INFLUX_SED=("${INFLUX_SETTLE_SED[@]}")
    # No response cache: every run must do the work.
    [[ "$system" == victoriametrics ]] && VM_ARGS=(-search.disableCache)
    start_system "$system" "$dir"

    local args=(load --file "$DATA" --url "$WRITE_URL" --batch "$BATCH" --workers "$WORKERS" --expect-rows "$ROWS")
    [[ -n "$FLUSH_URL" ]] && args+=(--flush-url "$FLUSH_URL")
    log "$NAME: loading $ROWS rows"
    local out
    if ! out=$("$BENCH_BIN" "${args[@]}" 2>&1); then
        echo "$out" >&2
        die_with_log "$NAME: load failed"
    fi
    log "$NAME: flushing and compacting"
    "settle_$system" "$dir"
    local count
    if [[ "$system" == sluice ]]; then count=$(count_sluice "$DB"); else count=$("count_$system"); fi
    [[ "$count" == "$ROWS" ]] || die_with_log "$NAME stored ${count:-an unknown number of} rows, expected $ROWS"

    local q r median rows first
    for q in $QUERIES; do
        query_def "$system" "$q" || continue
        log "$NAME: $q"
        if ! out=$("$BENCH_BIN" query --url "$URL" --method "$METHOD" --kind "$KIND" \
            --warmup "$WARMUP" --runs "$RUNS" "${PARAMS[@]}" 2>&1); then
            echo "$out" >&2
            fail "$NAME: $q failed"
            MEDIAN[$system/$q]=FAILED
            continue
        fi
        r=$(grep '^RESULT' <<<"$out")
        median=$(sed -nE 's/.* median_ms=([0-9.]+).*/\1/p' <<<"$r")
        rows=$(sed -nE 's/.* rows=([0-9]+).*/\1/p' <<<"$r")
        first=$(sed -nE 's/.* first=([^ ]*).*/\1/p' <<<"$r")
        echo "   $r" >&2
        MEDIAN[$system/$q]=$median; GOT_ROWS[$system/$q]=$rows
        if [[ "$rows" != "${EXPECT[$q]}" ]]; then
            fail "$NAME: $q returned $rows rows, expected ${EXPECT[$q]}"
        elif [[ "$q" == count && "${first%.*}" != "$ROWS" ]]; then
            fail "$NAME: count answered $first, expected $ROWS"
        fi
    done
    stop "$PID"
}

log "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "host $HOST; 1-hour window $(iso "$H1_FROM")..$(iso "$H1_TO"); 12-hour window $(iso "$H12_FROM")..$(iso "$H12_TO")"
for s in $SYSTEMS; do
    run "$s"
done

# --- the table ---------------------------------------------------------------------------

echo
echo "TSBS cpu-only, $SCALE hosts x $DURATION = $ROWS rows, full-precision floats, flushed and compacted; median of $RUNS runs after $WARMUP warm-ups; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
header="| query |"; rule="|---|"
for s in $SYSTEMS; do header+=" $s ms |"; rule+="---:|"; done
header+=" sluice/fastest peer | expected rows | rows returned ($SYSTEMS) |"; rule+="---:|---:|---|"
echo "$header"; echo "$rule"
for q in $QUERIES; do
    line="| $q |"
    best=""
    for s in $SYSTEMS; do
        m=${MEDIAN[$s/$q]:-}
        line+=" ${m:--} |"
        if [[ "$s" != sluice && "$m" =~ ^[0-9.]+$ ]]; then
            best=$(awk -v a="$best" -v b="$m" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }')
        fi
    done
    ratio=$(awk -v a="${MEDIAN[sluice/$q]:-}" -v b="$best" 'BEGIN { if (a ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else printf "-" }')
    got=""
    for s in $SYSTEMS; do got+="${got:+ / }${GOT_ROWS[$s/$q]:--}"; done
    line+=" $ratio | ${EXPECT[$q]} | $got |"
    echo "$line"
done
echo
echo "sluice/fastest peer = Sluice median / the faster peer's median (<1: Sluice faster)."
echo "Host $HOST; single-groupby over $(iso "$H1_FROM")..$(iso "$H1_TO"); double-groupby and high-cpu over $(iso "$H12_FROM")..$(iso "$H12_TO")."
echo "VictoriaMetrics rows = distinct (timestamp, labels without the metric name), so the ten metrics of one host at one time are one row."
echo
echo "Queries:"
for q in $QUERIES; do
    for s in $SYSTEMS; do
        query_def "$s" "$q" || continue
        text=""
        for ((i = 1; i < ${#PARAMS[@]}; i += 2)); do
            case "${PARAMS[i]}" in q=*|query=*) text=${PARAMS[i]#*=} ;; esac
        done
        extra=""
        for ((i = 1; i < ${#PARAMS[@]}; i += 2)); do
            case "${PARAMS[i]}" in start=*|end=*|step=*|time=*) extra+="${extra:+, }${PARAMS[i]}" ;; esac
        done
        echo "- $q, $s: \`$text\`${extra:+ ($extra)}"
    done
done
[[ "$FAILED" == 0 ]] || die "some queries failed or returned the wrong number of rows (see above)"
