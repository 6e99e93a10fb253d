#!/usr/bin/env bash
# pgbench (TPC-B-like, -n) against Sluice's PostgreSQL port and PostgreSQL 15,
# side by side in one run, every commit durable on both (PostgreSQL with
# fsync and synchronous_commit on, its defaults; Sluice answers COMMIT after
# its log fsync). Also point selects by primary key (-S).
#
#   bash benches/pgbench.sh                      # scale 1, 10 s per run
#   SCALE=4 SECONDS_PER_RUN=30 CLIENTS="1 8 32" bash benches/pgbench.sh
#
# Both get the same schema with primary keys in CREATE TABLE (Sluice stores
# rows by primary key, so it cannot add one afterwards) and the same rows,
# loaded with INSERT … SELECT from generate_series. Sluice is serializable
# and optimistic: a transaction that lost a race fails with 40001, which
# pgbench retries (--max-tries); PostgreSQL (read committed) waits on the
# row lock instead. Both counts are printed.
set -euo pipefail
SCRIPT=pgbench.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SCALE=${SCALE:-1}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-"1 8 32"}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SLUICE_BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release/sluice}
PG_PORT=${PG_PORT:-25432}
SL_PORT=${SL_PORT:-25433}
SL_HTTP=${SL_HTTP:-25434}

if [ ! -x "$PG_BIN/initdb" ] || ! command -v pgbench >/dev/null; then
  apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
fi
[ -x "$SLUICE_BIN" ] || { echo "$SCRIPT: build it first: cargo build --release -p sluice" >&2; exit 1; }

WORK=$(mktemp -d)
chmod 777 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg" -U postgres >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
"$SLUICE_BIN" serve --data-dir "$WORK/sluice" --http-addr "127.0.0.1:$SL_HTTP" \
  --lp-tcp-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --pg-addr "127.0.0.1:$SL_PORT" \
  >"$WORK/sluice.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$SL_HTTP/health" >/dev/null && break; sleep 0.1; done

schema="
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
INSERT INTO pgbench_branches (bid, bbalance, filler) SELECT value, 0, '' FROM generate_series(1, $SCALE) AS g(value);
INSERT INTO pgbench_tellers (tid, bid, tbalance, filler) SELECT value, (value - 1) / 10 + 1, 0, '' FROM generate_series(1, $((SCALE * 10))) AS g(value);
INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT value, (value - 1) / 100000 + 1, 0, '' FROM generate_series(1, $((SCALE * 100000))) AS g(value);
CREATE TABLE bench_tags (id int PRIMARY KEY, code int NOT NULL UNIQUE, v int);
INSERT INTO bench_tags (id, code, v) SELECT value, value + 1000000, value % 97 FROM generate_series(1, $((SCALE * 100000))) AS g(value);
"
# Point selects through the secondary (unique) index on bench_tags.code.
cat >"$WORK/index.sql" <<SQL
\\set c random(1000001, $((1000000 + SCALE * 100000)))
SELECT v FROM bench_tags WHERE code = :c;
SQL
chmod 644 "$WORK/index.sql"
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE bench" >/dev/null
for port_user in "$PG_PORT postgres" "$SL_PORT sluice"; do
  set -- $port_user
  while IFS= read -r stmt; do
    [ -n "$stmt" ] && psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U "$2" -d bench -c "$stmt" >/dev/null
  done <<<"$schema"
done

# One pgbench run: prints "tps p99_ms failed retried".
run() { # port user clients extra-args...
  local port=$1 user=$2 c=$3; shift 3
  local dir="$WORK/log-$port-$c-$RANDOM"; mkdir -p "$dir"; chmod 777 "$dir"
  local out
  out=$(cd "$dir" && pgbench -h 127.0.0.1 -p "$port" -U "$user" -n -c "$c" -j "$(( c < 2 ? c : 2 ))" \
    -T "$SECONDS_PER_RUN" --max-tries=100 -l "$@" bench 2>&1) || { echo "$out" >&2; echo "- - - -"; return; }
  local tps failed retried p99
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  retried=$(sed -n 's/^number of transactions retried: \([0-9]*\).*/\1/p' <<<"$out")
  p99=$(cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", a[i]/1000}')
  echo "${tps:--} ${p99:--} ${failed:-0} ${retried:-0}"
}

printf '%-12s %7s | %10s %8s %7s %7s | %10s %8s %7s %7s | %6s\n' workload clients \
  pg_tps pg_p99ms pg_fail pg_retry sl_tps sl_p99ms sl_fail sl_retry ratio
# tpcb: TPC-B-like, simple protocol; tpcb-ext: the same over the extended
# protocol (parameters bound per statement); select: point selects by
# primary key; index: point selects by a secondary unique index.
for mode in tpcb tpcb-ext select index; do
  case $mode in
    tpcb) extra=() ;;
    tpcb-ext) extra=(-M extended) ;;
    select) extra=(-S) ;;
    index) extra=(-f "$WORK/index.sql") ;;
  esac
  for c in $CLIENTS; do
    read -r ptps pp99 pf pr < <(run "$PG_PORT" postgres "$c" "${extra[@]}")
    read -r stps sp99 sf sr < <(run "$SL_PORT" sluice "$c" "${extra[@]}")
    ratio=$(awk -v a="$stps" -v b="$ptps" 'BEGIN { if (b > 0 && a+0 == a) printf "%.2f", a / b; else print "-" }')
    printf '%-12s %7s | %10s %8s %7s %7s | %10s %8s %7s %7s | %6s\n' "$mode" "$c" \
      "$ptps" "$pp99" "$pf" "$pr" "$stps" "$sp99" "$sf" "$sr" "$ratio"
  done
done
