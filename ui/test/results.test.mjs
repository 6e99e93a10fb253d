import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { Text } from "@codemirror/state";
import { sortOrder } from "../src/grid.js";
import { errorRange } from "../src/editor.js";

const DOC = JSON.stringify({ columns: [{ name: "n", type: "Int64" }] }).slice(0, -1) +
  ',"rows":[[1796346000123456789],[-9223372036854775808],[9007199254740991],[1.5e300],[12.25],["9999999999999999"]]}';

test("parses results keeping integers beyond 2^53 exact", () => {
  // Node 20 needs a flag for the reviver's source text; Chromium 114+ has it.
  const script = `import { parseJsonLossless } from ${JSON.stringify(new URL("../src/api.js", import.meta.url).href)};
    process.stdout.write(JSON.stringify(parseJsonLossless(${JSON.stringify(DOC)}).rows.map((r) => [typeof r[0], r[0]])));`;
  const out = execFileSync(process.execPath, ["--harmony-json-parse-with-source", "--input-type=module", "-e", script], { encoding: "utf8" });
  assert.deepEqual(JSON.parse(out), [
    ["string", "1796346000123456789"],
    ["string", "-9223372036854775808"],
    ["number", 9007199254740991],
    ["number", 1.5e300],
    ["number", 12.25],
    ["string", "9999999999999999"],
  ]);
});

test("sorts numeric columns exactly, integers kept as text included, NULLs last", () => {
  const rows = [["1796346000123456800"], [null], ["1796346000123456789"], [5], [-1.5], ["-9223372036854775808"], [5]];
  assert.deepEqual(sortOrder(rows, 0, 1, true), [5, 4, 3, 6, 2, 0, 1]);
  assert.deepEqual(sortOrder(rows, 0, -1, true), [0, 2, 3, 6, 4, 5, 1]);
  assert.deepEqual(sortOrder([["b"], ["a"], [null], ["10"], ["9"]], 0, 1, false), [3, 4, 1, 0, 2]);
});

test("error marks: offsets past a shortened document are clamped or skipped", () => {
  const doc = Text.of(["SELECT 1;", "SELECT nope FROM t"]);
  assert.deepEqual(errorRange(doc, 1, 8, 10), { from: 17, to: 21, lineFrom: 10 });
  assert.deepEqual(errorRange(doc, 2, 3, 0), { from: 12, to: 16, lineFrom: 10 });
  const short = Text.of(["SELECT 1"]);
  assert.equal(errorRange(short, 2, 1, 0), null);
  assert.doesNotThrow(() => errorRange(short, 1, 8, 40));
  assert.deepEqual(errorRange(short, 1, 1, 40), { from: 8, to: 8, lineFrom: 0 });
  assert.equal(errorRange(short, 3, 1, 40), null);
});
