import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCsv, inferType, makeConverter, toBatches, escapeKey, escapeMeasurement, escapeString, guessTimeFormat, epochToNanos, lpInteger, lpFloat } from "../src/csv.js";
import { isoToNanos, parseTimeMs, formatRatio, quoteIdent } from "../src/format.js";

test("parses quoted fields, doubled quotes, embedded newlines, CRLF and blank lines", () => {
  const { header, records } = parseCsv('a,b,c\r\n1,"x, y",3\r\n\r\n"multi\nline","say ""hi""",\n');
  assert.deepEqual(header, ["a", "b", "c"]);
  assert.deepEqual(records, [
    { line: 2, values: ["1", "x, y", "3"] },
    { line: 4, values: ["multi\nline", 'say "hi"', ""] },
  ]);
  assert.deepEqual(parseCsv("x;y\n1;2").records[0].values, ["1", "2"]);
});

test("escapes per line protocol", () => {
  assert.equal(escapeMeasurement("my cpu,1"), "my\\ cpu\\,1");
  assert.equal(escapeKey("a=b c,d"), "a\\=b\\ c\\,d");
  assert.equal(escapeString('he said "a\\b"'), '"he said \\"a\\\\b\\""');
});

test("infers column types", () => {
  const { records } = parseCsv("n,b,s\n1,true,x\n2.5,FALSE,3\n,,\n");
  assert.equal(inferType(records, 0), "float");
  assert.equal(inferType(records, 1), "boolean");
  assert.equal(inferType(records, 2), "string");
  const more = parseCsv("i,big,e\n-3,12345678901234567890,1e400\n+9223372036854775807,1,2\n").records;
  assert.equal(inferType(more, 0), "integer");
  assert.equal(inferType(more, 1), "float"); // beyond int64
  assert.equal(inferType(more, 2), "float");
});

test("encodes integers and floats from their text", () => {
  assert.equal(lpInteger("-42"), "-42i");
  assert.equal(lpInteger("+7"), "7i");
  assert.equal(lpInteger("-9223372036854775808"), "-9223372036854775808i");
  assert.equal(lpInteger("9223372036854775808"), null);
  assert.equal(lpInteger("1.5"), null);
  assert.equal(lpFloat("12345678901234567890"), "12345678901234567890");
  assert.equal(lpFloat("+.5"), "0.5");
  assert.equal(lpFloat("-1.E+3"), "-1e+3");
  assert.equal(lpFloat("0.1000000000000000055511"), "0.1000000000000000055511");
  assert.equal(lpFloat("1e400"), null);
  assert.equal(lpFloat("abc"), null);
});

test("converts integer columns, rejects non-finite floats, honours a type override", () => {
  const { header, records } = parseCsv("id,big,v\n12345678901234567,12345678901234567890,1e400\n2,3,4.5\n");
  const columns = header.map((h, i) => ({ role: "field", type: inferType(records, i) }));
  assert.deepEqual(columns.map((c) => c.type), ["integer", "float", "float"]);
  let { convert } = makeConverter({ header, columns, measurement: "m", timeFormat: "iso" });
  assert.deepEqual(convert(records[0].values), { error: 'column v: "1e400" is not a finite number' });
  assert.deepEqual(convert(records[1].values), { line: "m id=2i,big=3,v=4.5" });
  columns[0].type = "float";
  columns[1].type = "string";
  columns[2].type = "integer";
  ({ convert } = makeConverter({ header, columns, measurement: "m", timeFormat: "iso" }));
  assert.deepEqual(convert(records[1].values), { error: 'column v: "4.5" is not an integer in the 64-bit range' });
  columns[2].type = "boolean";
  ({ convert } = makeConverter({ header, columns, measurement: "m", timeFormat: "iso" }));
  assert.deepEqual(convert(records[1].values), { error: 'column v: "4.5" is not a boolean' });
  columns[2].role = "ignore";
  ({ convert } = makeConverter({ header, columns, measurement: "m", timeFormat: "iso" }));
  assert.deepEqual(convert(records[0].values), { line: 'm id=12345678901234567,big="12345678901234567890"' });
});

test("converts rows with tags, fields and time and maps lines back", () => {
  const csv = "time,host,region,usage,ok,note\n2026-12-04T01:00:00Z,a b,eu,1.5,true,\"x\"\"y\"\n2026-12-04T01:00:01.5Z,c,eu,,false,\"two\nlines\"\n2026-12-04T01:00:02Z,c,eu,,,\n";
  const { header, records } = parseCsv(csv);
  const columns = header.map((h, i) => ({
    role: h === "time" ? "time" : h === "host" || h === "region" ? "tag" : "field",
    type: inferType(records, i),
  }));
  const { convert, precision } = makeConverter({ header, columns, measurement: "cpu load", timeFormat: "iso" });
  assert.equal(precision, "ns");
  const { batches, errors } = toBatches(records, convert, 1);
  assert.equal(batches.length, 2);
  assert.equal(batches[0].body, 'cpu\\ load,host=a\\ b,region=eu usage=1.5,ok=true,note="x\\"y" 1796346000000000000\n');
  assert.equal(batches[1].body, 'cpu\\ load,host=c,region=eu ok=false,note="two\nlines" 1796346001500000000\n');
  assert.deepEqual(batches[1].lineMap, [3, 3]);
  assert.deepEqual(errors, [{ csvLine: 5, reason: "no field values in this row" }]);
});

test("time helpers", () => {
  assert.equal(isoToNanos("2026-12-04T01:00:00.123456789Z"), "1796346000123456789");
  assert.equal(isoToNanos("2026-12-04T02:00:00+01:00"), "1796346000000000000");
  assert.equal(parseTimeMs("2026-12-04T01:00:00"), 1796346000000);
  assert.equal(epochToNanos("1796346000", "s"), "1796346000000000000");
  assert.equal(epochToNanos("1796346000.25", "s"), "1796346000250000000");
  assert.equal(epochToNanos("1796346000123", "ms"), "1796346000123000000");
  assert.equal(guessTimeFormat("1796346000123"), "ms");
  assert.equal(guessTimeFormat("2026-12-04"), "iso");
  assert.equal(formatRatio(100, 0), "–");
  assert.equal(formatRatio(800, 100), "8.0×");
  assert.equal(quoteIdent("cpu"), "cpu");
  assert.equal(quoteIdent("CPU"), '"CPU"');
  assert.equal(quoteIdent("my-db"), '"my-db"');
  assert.equal(quoteIdent("order"), '"order"');
});
