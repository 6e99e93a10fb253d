#!/usr/bin/env bash
# MQTT conformance run: the Eclipse Paho interoperability suite
# (https://github.com/eclipse/paho.mqtt.testing, interoperability/
# client_test.py for MQTT 3.1.1 and client_test5.py for MQTT 5), unmodified,
# against Debian's mosquitto as the reference and against Sluice's embedded
# broker. Prints passed/total per suite and broker, and the failing tests.
#
# A manual run, not part of CI: the suite needs a checkout of its own and
# takes about seven minutes, and some of its tests assume things of its own
# reference broker (a topic that refuses subscriptions, a server keep-alive
# of 60 s) that neither broker is configured for.
#
# Usage: tests/conformance/paho.sh [PAHO_DIR]
#   PAHO_DIR           checkout of paho.mqtt.testing ($1 wins over the env)
#   SLUICE_BIN         sluice binary, default ${CARGO_TARGET_DIR:-target}/debug/sluice
#                      (target/ meaning the one at the repository root)
#   PAHO_TEST_TIMEOUT  seconds one test may take before it is failed (60)
#   KEEP_LOGS=1        keep the broker and suite logs instead of deleting them
# Needs python3 and mosquitto (apt-get install mosquitto); does not build.
# Exit status: 0 when every suite ran to its end, whatever it reported.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

paho_dir="${1:-${PAHO_DIR:-}}"
if [ -z "$paho_dir" ] || [ ! -f "$paho_dir/interoperability/client_test.py" ]; then
  echo "usage: $0 PAHO_DIR (a checkout of github.com/eclipse/paho.mqtt.testing)" >&2
  exit 2
fi
paho_dir="$(cd "$paho_dir" && pwd)"
interop="$paho_dir/interoperability"

sluice_bin="${SLUICE_BIN:-${CARGO_TARGET_DIR:-$repo_root/target}/debug/sluice}"
if [ ! -x "$sluice_bin" ]; then
  echo "no sluice binary at $sluice_bin (cargo build, or set SLUICE_BIN)" >&2
  exit 2
fi
# mosquitto lives in /usr/sbin, which is not on every user's PATH.
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
if [ ! -x "$mosquitto_bin" ]; then
  echo "mosquitto not found (apt-get install mosquitto)" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/paho-conformance.XXXXXX")"
pids=()
suite_pid=

# Stop exactly the processes this script started, then drop the temp dir.
cleanup() {
  local pid
  if [ -n "$suite_pid" ]; then
    kill "$suite_pid" 2>/dev/null || true
    wait "$suite_pid" 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_LOGS:-0}" = 1 ]; then
    rm -rf "$work/sluice-data"
    echo "logs kept in $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port the kernel just handed out and released; good enough on loopback.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until something accepts on the port, failing if the process died.
wait_listening() {
  local name="$1" pid="$2" port="$3" log="$4" tries=0
  while [ "$tries" -lt 100 ]; do
    tries=$((tries + 1))
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited during startup; its log:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$name is not listening on $port after 10 s; its log:" >&2
  cat "$log" >&2
  exit 1
}

# The suites cannot be pointed at a port from the command line as they stand:
# their __main__ reads -h/-p with getopt and then calls unittest.main(), which
# parses the same sys.argv and rejects those options. This driver runs each
# file's own __main__ (so its option handling and topic setup are the
# suite's) and gives unittest an argv of its own. It also fails a test that
# runs longer than PAHO_TEST_TIMEOUT: test_flow_control2 loops on the socket
# forever when a broker does not disconnect a client exceeding its Receive
# Maximum (mosquitto 2.0 does not), which would hang the whole run. The
# watchdog raises its own exception class, re-armed every 5 s, because the
# suite's receive loop swallows socket.timeout (TimeoutError).
cat >"$work/run_suite.py" <<'EOF'
import functools, os, runpy, signal, sys, unittest

script, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
limit = int(os.environ.get("PAHO_TEST_TIMEOUT", "60"))
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))

class Watchdog(Exception):
    pass

def expired(signum, frame):
    signal.alarm(5)
    raise Watchdog("test still running after %d s" % limit)

signal.signal(signal.SIGALRM, expired)

class Result(unittest.TextTestResult):
    def startTest(self, test):
        signal.alarm(limit)
        super().startTest(test)

    def stopTest(self, test):
        signal.alarm(0)
        super().stopTest(test)

sys.argv = [script, "--hostname", host, "--port", port]
unittest.main = functools.partial(
    unittest.TestProgram,
    argv=[script, "-v"],
    testRunner=unittest.TextTestRunner(verbosity=2, resultclass=Result),
)
runpy.run_path(script, run_name="__main__")
EOF

mosquitto_port="$(free_port)"
cat >"$work/mosquitto.conf" <<EOF
listener $mosquitto_port 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
EOF
"$mosquitto_bin" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=("$!")
wait_listening mosquitto "$!" "$mosquitto_port" "$work/mosquitto.log"

# Every listener on its own free port, so a running Sluice or a broker on
# 1883 is left alone; run from the temp dir so no stray config is picked up.
sluice_port="$(free_port)"
(
  cd "$work"
  exec "$sluice_bin" serve --data-dir "$work/sluice-data" \
    --http-addr "127.0.0.1:$(free_port)" \
    --lp-tcp-addr "127.0.0.1:$(free_port)" \
    --mqtt-addr "127.0.0.1:$sluice_port"
) >"$work/sluice.log" 2>&1 &
pids+=("$!")
wait_listening sluice "$!" "$sluice_port" "$work/sluice.log"

summary="$work/summary.tsv"
: >"$summary"
crashed=0

# run_suite SUITE_FILE BROKER PORT: one suite against one broker, one row of
# the summary: suite, broker, passed/total, failing tests.
run_suite() {
  local suite="$1" broker="$2" port="$3" log rc=0 total failed
  log="$work/${broker}-${suite%.py}.log"
  echo "running $suite against $broker (127.0.0.1:$port) ..."
  # In the background and waited for, so that Ctrl-C or TERM reaches the
  # trap at once instead of after the suite (bash runs traps only between
  # foreground commands). A non-zero exit means failed tests: a result.
  (cd "$interop" && exec timeout 1800 python3 "$work/run_suite.py" "$suite" 127.0.0.1 "$port") \
    >"$log" 2>&1 &
  suite_pid=$!
  wait "$suite_pid" || rc=$?
  suite_pid=
  total="$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$log" | tail -n 1)"
  if [ -z "$total" ]; then
    crashed=1
    printf '%s\t%s\t%s\t%s\n' "$suite" "$broker" "did not finish (exit $rc)" "see $log" >>"$summary"
    return 0
  fi
  # unittest's closing report names each failure once: "FAIL: test_x (...)".
  failed="$(sed -n 's/^\(FAIL\|ERROR\): \([A-Za-z0-9_]*\) .*/\2/p' "$log" | sort -u | paste -sd ' ' -)"
  local nfailed=0
  if [ -n "$failed" ]; then
    nfailed="$(wc -w <<<"$failed")"
  fi
  printf '%s\t%s\t%s\t%s\n' "$suite" "$broker" "$((total - nfailed))/$total" "${failed:--}" >>"$summary"
}

for suite in client_test.py client_test5.py; do
  run_suite "$suite" mosquitto "$mosquitto_port"
  run_suite "$suite" sluice "$sluice_port"
done

echo
printf '%-16s %-10s %-8s %s\n' suite broker passed failing
while IFS=$'\t' read -r suite broker passed failing; do
  printf '%-16s %-10s %-8s %s\n' "$suite" "$broker" "$passed" "$failing"
done <"$summary"

if [ "$crashed" = 1 ]; then
  KEEP_LOGS=1
  exit 1
fi
