#!/usr/bin/env bash
# Storage benchmark: bytes on disk per stored value for Sluice, InfluxDB 1.x
# and VictoriaMetrics, after each has flushed and compacted the same TSBS
# cpu-only data, for three kinds of values (full-precision floats, floats
# rounded to 2 decimals, integers). Also reads everything back from Sluice and
# checks it bit for bit. See benches/README.md.
#
# Environment:
#   SCALE=100 DURATION=1d SEED=1     data: hosts, time span, RNG seed
#   VARIANTS="full round2 int"       value variants (sluice-bench generate --values)
#   SYSTEMS="sluice influxdb victoriametrics"   which systems, in order
#   WORKERS=4 BATCH=5000             loader: concurrent connections, lines per request
#   SLUICE_BIN=<repo>/target/release/sluice  (cargo build --release -p sluice)
#   SLUICE_SHARDS=$(nproc)           --shards for Sluice
#   VERIFY=1                         0 skips reading Sluice's data back
#   STABLE_S=20                      settled = data files unchanged for this many seconds
#   SETTLE_TIMEOUT=900               fail if a system has not settled after this long
#   BASE_PORT=28000                  ports BASE_PORT..BASE_PORT+2, all on 127.0.0.1
#   BENCH_BIN=                       prebuilt sluice-bench (else built with cargo)
#   KEEP=0                           1 keeps the temp dir (data files, data dirs, server logs)
#
# Everything listens on and talks to 127.0.0.1 only. Every server started here
# is stopped on exit.
set -euo pipefail

SCALE=${SCALE:-100}
DURATION=${DURATION:-1d}
SEED=${SEED:-1}
VARIANTS=${VARIANTS:-"full round2 int"}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-5000}
VERIFY=${VERIFY:-1}
SLUICE_SHARDS=${SLUICE_SHARDS:-$(nproc)}
SYSTEMS=${SYSTEMS:-"sluice influxdb victoriametrics"}
BASE_PORT=${BASE_PORT:-28000}
KEEP=${KEEP:-0}
DB=bench

SCRIPT=storage.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}

bench_init sluice-storage
DURATION_S=$(duration_seconds "$DURATION")
ROWS=$((SCALE * (DURATION_S / 10)))
VALUES=$((ROWS * 10))
((ROWS > 0)) || die "no rows: DURATION must be at least 10s"
for v in $VARIANTS; do
    case "$v" in full|round2|int) ;; *) die "unknown variant $v in VARIANTS (full, round2, int)" ;; esac
done

ensure_systems
ensure_bench_bin
check_ports_free

# --- one system, one variant ---------------------------------------------------

RESULTS=()
FAILED=0
fail() { echo "$SCRIPT: $*" >&2; FAILED=1; }
path_bytes() { du -sb "$1" 2>/dev/null | cut -f1 || echo "?"; }

# Sluice's own view of its storage, from system.tables: "chunks chunk_rows buffered_rows bytes_on_disk".
sluice_storage_stats() {
    sluice_sql "SELECT sum(chunks), sum(chunk_rows), sum(buffered_rows), sum(bytes_on_disk) FROM system.tables WHERE database = '$DB'" csv |
        tail -n +2 | tr ',' ' '
}

run() { # system variant data
    local system=$1 variant=$2 data=$3
    NAME="$system-$variant"
    local dir="$WORK/$NAME"
    INFLUX_SED=()
    [[ "$system" == influxdb ]] && INFLUX_SED=("${INFLUX_SETTLE_SED[@]}")
    start_system "$system" "$dir"

    local args=(load --file "$data" --url "$WRITE_URL" --batch "$BATCH" --workers "$WORKERS" --expect-rows "$ROWS")
    [[ -n "$FLUSH_URL" ]] && args+=(--flush-url "$FLUSH_URL")
    log "$NAME: loading $ROWS rows"
    local out
    if ! out=$("$BENCH_BIN" "${args[@]}" 2>&1); then
        echo "$out" >&2
        die_with_log "$NAME: load failed"
    fi
    echo "$out" | grep -v '^RESULT' >&2

    log "$NAME: flushing and compacting"
    local t0 t1 settle
    t0=$(date +%s.%N)
    "settle_$system" "$dir"
    t1=$(date +%s.%N)
    settle=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    local bytes apparent alloc
    read -r bytes apparent alloc < <(data_sizes "$system" "$dir")
    log "$NAME: settled after ${settle}s (${STABLE_S}s of that waiting for no change): $bytes bytes on disk ($apparent apparent, $alloc allocated)"

    local count status=ok notes="-"
    if [[ "$system" == sluice ]]; then count=$(count_sluice "$DB"); else count=$("count_$system"); fi
    if [[ "$count" != "$ROWS" ]]; then
        status="MISMATCH(${count:-?})"
        fail "$NAME stored ${count:-an unknown number of} rows, expected $ROWS"
    fi
    case "$system" in
        sluice)
            local chunks chunk_rows buffered chunk_bytes
            if read -r chunks chunk_rows buffered chunk_bytes < <(sluice_storage_stats 2>/dev/null) && [[ -n "${buffered:-}" ]]; then
                notes="chunks=$chunks chunk_bytes=$chunk_bytes buffered_rows=$buffered"
                if [[ "$buffered" != 0 || "$chunk_rows" != "$ROWS" ]]; then
                    status="$status,UNFLUSHED"
                    fail "$NAME: after the flush $buffered rows are still buffered and $chunk_rows are in chunks (expected 0 and $ROWS)"
                fi
            else
                notes="system.tables unavailable"
            fi
            ;;
        influxdb) notes="tsm_files=$(find "$dir/data" -name '*.tsm' | wc -l) wal_bytes=$(path_bytes "$dir/wal")" ;;
        victoriametrics) notes="data=$(path_bytes "$dir/data/data") indexdb=$(path_bytes "$dir/data/indexdb")" ;;
    esac

    local readback="-"
    if [[ "$system" != sluice && "$VERIFY" == 1 ]]; then
        readback=$(spot_check "$system" "$data")
        log "$NAME: read-back of host_0 usage_user: $readback"
    fi
    if [[ "$system" == sluice && "$VERIFY" == 1 ]]; then
        log "$NAME: reading every value back"
        local vout
        if vout=$("$BENCH_BIN" verify --data "$data" --url "http://127.0.0.1:$HTTP_PORT" --db "$DB" 2>&1); then
            readback="ok"
        else
            readback="FAILED"
            fail "$NAME: read-back differs from what was sent"
        fi
        echo "$vout" | grep -v '^RESULT' >&2
        local r
        r=$(grep '^RESULT' <<<"$vout" || true)
        if [[ -n "$r" ]]; then
            local mism missing extra
            mism=$(sed -nE 's/.* value_mismatches=([0-9]+).*/\1/p' <<<"$r")
            missing=$(sed -nE 's/.* missing_rows=([0-9]+).*/\1/p' <<<"$r")
            extra=$(sed -nE 's/.* extra_rows=([0-9]+).*/\1/p' <<<"$r")
            [[ "$readback" == ok ]] || readback="FAILED(${mism}_values,${missing}_missing,${extra}_extra)"
        fi
    fi
    stop "$PID"
    RESULTS+=("$variant $system $count $bytes $apparent $alloc $settle $status $readback ${notes// /;}")
}

# Peers: reads one series (host_0's usage_user, every timestamp) back and
# compares it with the file, as numbers (awk parses both texts to doubles, so
# equal means the same double). Prints "exact(N)" or "D_of_N_differ[,M_missing]".
expected_series() { # data host field -> "ts_ms value" lines
    grep -F "cpu,hostname=$2," "$1" | awk -v f="$3=" '{
        n = split($2, kv, ","); v = ""
        for (i = 1; i <= n; i++) if (index(kv[i], f) == 1) v = substr(kv[i], length(f) + 1)
        sub(/i$/, "", v); print substr($3, 1, length($3) - 6), v }'
}
export_influxdb() { # host field -> "ts_ms value" lines
    lc -f -G "http://127.0.0.1:$HTTP_PORT/query" --data-urlencode "db=$DB" --data-urlencode epoch=ms \
        --data-urlencode "q=SELECT \"$2\" FROM cpu WHERE hostname = '$1'" |
        grep -oE '\[[0-9]+,[^],]+\]' | tr -d '[]' | tr ',' ' '
}
export_victoriametrics() { # host field -> "ts_ms value" lines
    lc -f -G "http://127.0.0.1:$HTTP_PORT/api/v1/export" --data-urlencode "match[]=cpu_$2{hostname=\"$1\"}" |
        sed -nE 's/.*"values":\[([^]]*)\],"timestamps":\[([^]]*)\].*/\1 \2/p' |
        awk '{ n = split($1, v, ","); split($2, t, ","); for (i = 1; i <= n; i++) print t[i], v[i] }'
}
spot_check() { # system data
    local want="$WORK/$NAME.want" got="$WORK/$NAME.got"
    expected_series "$2" host_0 usage_user >"$want"
    "export_$1" host_0 usage_user >"$got" || { echo "export_failed"; return 0; }
    awk 'NR == FNR { want[$1] = $2; next }
        ($1 in want) { n++; if ($2 + 0 != want[$1] + 0) d++; seen[$1] = 1 }
        END { m = 0; for (k in want) if (!(k in seen)) m++
              if (d + m == 0) printf "exact(%d)", n; else printf "%d_of_%d_differ%s", d, n, m ? "," m "_missing" : "" }' "$want" "$got"
}

# --- running -------------------------------------------------------------------

log "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A LP_BYTES=()
for variant in $VARIANTS; do
    data="$WORK/cpu-$SCALE-$DURATION-$variant.lp"
    log "generating $ROWS rows ($SCALE hosts x $DURATION, values $variant)"
    "$BENCH_BIN" generate --scale "$SCALE" --duration "$DURATION" --seed "$SEED" --values "$variant" --out "$data" >/dev/null
    LP_BYTES[$variant]=$(stat -c %s "$data")
    for s in $SYSTEMS; do
        run "$s" "$variant" "$data"
    done
    [[ "$KEEP" == 1 ]] || rm -f "$data"
done

# --- the tables ----------------------------------------------------------------------

declare -A BPV=()
for r in "${RESULTS[@]}"; do
    read -r variant system _ bytes _ <<<"$r"
    BPV[$variant/$system]=$(awk -v b="$bytes" -v n="$VALUES" 'BEGIN { printf "%.3f", b / n }')
done

echo
echo "TSBS cpu-only, $SCALE hosts x $DURATION = $ROWS rows ($VALUES values) per variant, after flush and compaction; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| variant | line protocol B/value | $(for s in $SYSTEMS; do printf '%s B/value | ' "$s"; done)$(for s in $SYSTEMS; do [[ "$s" == sluice ]] || printf 'sluice/%s | ' "$s"; done)"
printf '|---|---:|'; for s in $SYSTEMS; do printf -- '---:|'; done; for s in $SYSTEMS; do [[ "$s" == sluice ]] || printf -- '---:|'; done; echo
for variant in $VARIANTS; do
    line="| $variant | $(awk -v b="${LP_BYTES[$variant]}" -v n="$VALUES" 'BEGIN { printf "%.2f", b / n }') |"
    for s in $SYSTEMS; do line+=" ${BPV[$variant/$s]:-n/a} |"; done
    for s in $SYSTEMS; do
        [[ "$s" == sluice ]] && continue
        line+=" $(awk -v a="${BPV[$variant/sluice]:-}" -v b="${BPV[$variant/$s]:-}" 'BEGIN { if (a != "" && b > 0) printf "%.2fx", a / b; else printf "-" }') |"
    done
    echo "$line"
done
echo
echo "| variant | system | rows stored | bytes on disk | bytes/value | du -sb B/value | du -s B/value | settle s | stored rows | read-back | notes |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"
for r in "${RESULTS[@]}"; do
    read -r variant system count bytes apparent alloc settle status readback notes <<<"$r"
    awk -v v="$variant" -v s="$system" -v c="$count" -v b="$bytes" -v p="$apparent" -v a="$alloc" -v t="$settle" \
        -v st="$status" -v rb="$readback" -v no="${notes//;/ }" -v n="$VALUES" \
        'BEGIN { printf "| %s | %s | %s | %d | %.3f | %.3f | %.3f | %s | %s | %s | %s |\n", v, s, c, b, b / n, p / n, a / n, t, st, rb, no }'
done
echo
echo "bytes on disk = over every file of the data directories, the smaller of its size and its allocated blocks (sparse or preallocated space that holds nothing is not counted, nor is block rounding); tags, timestamps and indexes included."
echo "bytes/value = bytes on disk / $VALUES values (10 fields x $ROWS rows). du -sb (apparent sizes) and du -s (allocated blocks) for comparison."
echo "read-back: Sluice, every value of every row compared bit for bit (sluice-bench verify); peers, host_0's usage_user compared with the file as doubles."
echo "sluice/peer = Sluice bytes/value / peer bytes/value (<1: Sluice smaller)."
echo "settle s = from the flush request (or the end of the load) until the data files had not changed for ${STABLE_S}s, those ${STABLE_S}s included."
[[ "$FAILED" == 0 ]] || die "some checks failed (see above)"
