#!/usr/bin/env bash
# Builds the web console into ui/dist (or into the folder given as $1):
# app.js (one minified ES module: the app, CodeMirror, uPlot), app.css,
# index.html and LICENSES.txt. Needs Node and npm; the output is committed,
# so building the Rust binary never needs them.
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ "${SLUICE_UI_SKIP_NPM_CI:-}" != 1 ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

esbuild=node_modules/.bin/esbuild
common=(--bundle --minify --charset=utf8 --legal-comments=none --log-level=warning)
"$esbuild" src/main.js "${common[@]}" --format=esm --target=es2020 \
  --metafile="$tmp/js.json" --outfile="$tmp/app.js"
"$esbuild" src/app.css "${common[@]}" --metafile="$tmp/css.json" --outfile="$tmp/app.css"
node -e '
  const fs = require("fs");
  const [a, b, out] = process.argv.slice(1);
  const ja = JSON.parse(fs.readFileSync(a)), jb = JSON.parse(fs.readFileSync(b));
  fs.writeFileSync(out, JSON.stringify({ inputs: { ...ja.inputs, ...jb.inputs } }));
' "$tmp/js.json" "$tmp/css.json" "$tmp/meta.json"
node scripts/licenses.mjs "$tmp/meta.json" "$tmp/LICENSES.txt"
cp src/index.html "$tmp/index.html"

rm -f "$out/app.js" "$out/app.css" "$out/index.html" "$out/LICENSES.txt"
cp "$tmp/app.js" "$tmp/app.css" "$tmp/index.html" "$tmp/LICENSES.txt" "$out/"
echo "built $out:"
for f in index.html app.js app.css; do
  printf '  %-11s %8d bytes, %7d gzipped\n' "$f" "$(wc -c <"$out/$f")" "$(gzip -9 -c "$out/$f" | wc -c)"
done
