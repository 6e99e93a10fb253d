// Writes the license texts of the npm packages that ended up in the bundle.
// Usage: node scripts/licenses.mjs <esbuild metafile> <output file>
import { readFileSync, writeFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";

const [metaPath, outPath] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(metaPath, "utf8"));
const dirs = new Set();
for (const input of Object.keys(meta.inputs)) {
  const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (m) dirs.add(m[1]);
}
const parts = [
  "Third-party software bundled in app.js and app.css of the Sluice console.",
  "Each package is listed with its version, its license and the license text it ships.",
  "",
];
for (const name of [...dirs].sort()) {
  const dir = join("node_modules", name);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).sort().find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
  if (!file) throw new Error(`${name}: no license file in the package`);
  const text = readFileSync(join(dir, file), "utf8").replace(/\r\n/g, "\n").trim();
  parts.push("=".repeat(78), `${pkg.name} ${pkg.version} (${pkg.license})`, "=".repeat(78), "", text, "");
}
writeFileSync(outPath, parts.join("\n"));
if (!existsSync(outPath)) process.exit(1);
