#!/usr/bin/env bash
# Fails when the committed ui/dist is not what the sources build to.
set -euo pipefail
cd "$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
./build.sh "$tmp/dist" >/dev/null
if ! diff -r "$tmp/dist" dist >"$tmp/diff" 2>&1; then
  echo "ui/check.sh: the committed ui/dist differs from what ui/src builds to." >&2
  echo "Run ui/build.sh and commit ui/dist. Differences:" >&2
  head -c 3000 "$tmp/diff" | cut -c1-200 >&2
  exit 1
fi
echo "ui/check.sh: ui/dist matches the sources."
