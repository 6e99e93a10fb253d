// CSV parsing and CSV → line protocol conversion, in the browser. Pure code
// (no DOM) so the node tests can check the escaping rules.

import { isoToNanos } from "./format.js";

/** Picks the delimiter (comma, semicolon or tab) that splits the header most. */
export function detectDelimiter(text) {
  const firstLine = text.slice(0, text.search(/\r?\n|$/));
  let best = ",";
  let bestCount = 0;
  for (const d of [",", ";", "\t"]) {
    let count = 0;
    let quoted = false;
    for (const ch of firstLine) {
      if (ch === '"') quoted = !quoted;
      else if (ch === d && !quoted) count++;
    }
    if (count > bestCount) {
      best = d;
      bestCount = count;
    }
  }
  return best;
}

/**
 * Parses CSV text (RFC 4180: quoted fields, doubled quotes, newlines inside
 * quotes, CRLF or LF). Returns {header, records: [{line, values}]} where
 * `line` is the 1-based physical line the record starts on (header = 1).
 * Blank lines are skipped.
 */
export function parseCsv(text, delimiter = detectDelimiter(text)) {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const rows = [];
  let values = [];
  let field = "";
  let quoted = false;
  let wasQuoted = false;
  let line = 1;
  let rowLine = 1;
  const n = text.length;
  const endField = () => {
    values.push(field);
    field = "";
    wasQuoted = false;
  };
  const endRow = () => {
    endField();
    if (!(values.length === 1 && values[0] === "" && !wasQuoted)) rows.push({ line: rowLine, values });
    values = [];
  };
  for (let i = 0; i < n; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else {
        if (c === "\n") line++;
        field += c;
      }
    } else if (c === '"' && field === "") {
      quoted = true;
      wasQuoted = true;
    } else if (c === delimiter) {
      endField();
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      const blank = values.length === 0 && field === "" && !wasQuoted;
      if (!blank) endRow();
      else values = [];
      line++;
      rowLine = line;
    } else {
      field += c;
    }
  }
  if (field !== "" || values.length > 0 || wasQuoted) endRow();
  if (rows.length === 0) return { header: [], records: [] };
  const header = rows[0].values.map((h) => h.trim());
  return { header, records: rows.slice(1) };
}

const NUMBER_RE = /^([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?$/;
const INT_RE = /^[+-]?\d+$/;
const BOOL_RE = /^(true|false)$/i;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** The field types a CSV column can be written as. */
export const FIELD_TYPES = ["integer", "float", "string", "boolean"];

/** Line-protocol integer (`-12i`) for an integer text within int64, else null. */
export function lpInteger(v) {
  if (!INT_RE.test(v)) return null;
  const n = BigInt(v);
  return n < I64_MIN || n > I64_MAX ? null : v.replace(/^\+/, "") + "i";
}

/**
 * Line-protocol float for a decimal text, digits as written (`+.5` → `0.5`,
 * `1.` → `1`), or null when it is not a number or not finite (`1e400`).
 */
export function lpFloat(v) {
  const m = NUMBER_RE.exec(v);
  if (!m || !Number.isFinite(+v)) return null;
  const [, sign, int, frac, onlyFrac, exp] = m;
  const digits = int !== undefined ? int + (frac ? "." + frac : "") : "0." + onlyFrac;
  return (sign === "-" ? "-" : "") + digits + (exp !== undefined ? "e" + exp : "");
}

/** "integer" | "float" | "boolean" | "string" for a column, judged on all its non-empty values. */
export function inferType(records, index) {
  let ints = true;
  let numbers = true;
  let bools = true;
  let any = false;
  for (const r of records) {
    const v = (r.values[index] ?? "").trim();
    if (v === "") continue;
    any = true;
    if (numbers && !NUMBER_RE.test(v)) numbers = ints = false;
    else if (ints && lpInteger(v) === null) ints = false;
    if (bools && !BOOL_RE.test(v)) bools = false;
    if (!numbers && !bools) return "string";
  }
  if (!any) return "string";
  return ints ? "integer" : numbers ? "float" : bools ? "boolean" : "string";
}

/** Guesses the time format from a sample value: "iso" or an epoch unit. */
export function guessTimeFormat(value) {
  const v = String(value ?? "").trim();
  if (/^-?\d+$/.test(v)) {
    const digits = v.replace("-", "").length;
    if (digits <= 11) return "s";
    if (digits <= 14) return "ms";
    if (digits <= 17) return "us";
    return "ns";
  }
  if (/^-?\d+\.\d+$/.test(v)) return "s";
  return "iso";
}

/** Guesses which header names a time column. -1 when none looks like one. */
export function guessTimeColumn(header) {
  const names = ["time", "timestamp", "_time", "ts", "datetime", "date"];
  for (const n of names) {
    const i = header.findIndex((h) => h.toLowerCase() === n);
    if (i >= 0) return i;
  }
  return header.findIndex((h) => /time|date/i.test(h));
}

// Escaping per line protocol: measurement escapes comma and space; tag keys,
// tag values and field keys escape comma, equals sign and space; string field
// values escape double quote and backslash. Newlines cannot be written in
// names or tag values, so they become spaces there.
const noNewline = (s) => s.replace(/\r\n|\r|\n/g, " ");
export const escapeMeasurement = (s) => noNewline(s).replace(/\\(?=[, ]|$)/g, "\\\\").replace(/[, ]/g, (c) => "\\" + c);
export const escapeKey = (s) => noNewline(s).replace(/\\(?=[,= ]|$)/g, "\\\\").replace(/[,= ]/g, (c) => "\\" + c);
export const escapeString = (s) => '"' + s.replace(/[\\"]/g, (c) => "\\" + c) + '"';

const UNIT_DIGITS = { s: 9, ms: 6, us: 3, ns: 0 };

/** Epoch value in `unit` (integer or decimal text) → exact nanoseconds as text, or null. */
export function epochToNanos(text, unit) {
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(String(text).trim());
  if (!m || !(unit in UNIT_DIGITS)) return null;
  const digits = UNIT_DIGITS[unit];
  const frac = ((m[3] || "") + "0".repeat(digits)).slice(0, digits);
  const ns = BigInt(m[2] + frac);
  return (m[1] && ns !== 0n ? "-" : "") + ns.toString();
}

/**
 * Builds the converter for a CSV layout. `columns` lists, per CSV column,
 * {role: "tag"|"field"|"time"|"ignore", type: one of FIELD_TYPES}.
 * `timeFormat` is "iso" or "s"/"ms"/"us"/"ns" (epoch). The returned precision
 * is what /write must be told.
 */
export function makeConverter({ header, columns, measurement, timeFormat }) {
  const m = escapeMeasurement(measurement);
  const tagIdx = [];
  const fieldIdx = [];
  let timeIdx = -1;
  columns.forEach((c, i) => {
    if (c.role === "tag") tagIdx.push(i);
    else if (c.role === "field") fieldIdx.push(i);
    else if (c.role === "time" && timeIdx < 0) timeIdx = i;
  });
  // Tags sorted by key, as the line protocol docs recommend.
  tagIdx.sort((a, b) => (header[a] < header[b] ? -1 : header[a] > header[b] ? 1 : 0));
  const tagKeys = tagIdx.map((i) => escapeKey(header[i]));
  const fieldKeys = fieldIdx.map((i) => escapeKey(header[i]));
  // Every time is turned into exact nanoseconds, so one precision fits all.
  const precision = "ns";

  /** One record → {line} or {error}. */
  function convert(values) {
    let out = m;
    for (let k = 0; k < tagIdx.length; k++) {
      const v = (values[tagIdx[k]] ?? "").trim();
      if (v !== "") out += "," + tagKeys[k] + "=" + escapeKey(v);
    }
    let sep = " ";
    let nFields = 0;
    for (let k = 0; k < fieldIdx.length; k++) {
      const i = fieldIdx[k];
      const raw = values[i] ?? "";
      const v = raw.trim();
      if (v === "") continue;
      let enc;
      const type = columns[i].type;
      if (type === "integer") enc = lpInteger(v);
      else if (type === "float") enc = lpFloat(v);
      else if (type === "boolean") enc = BOOL_RE.test(v) ? v.toLowerCase() : null;
      else enc = escapeString(raw);
      if (enc === null) {
        const what = type === "integer" ? "an integer in the 64-bit range" : type === "float" ? "a finite number" : "a boolean";
        return { error: `column ${header[i]}: "${v}" is not ${what}` };
      }
      out += sep + fieldKeys[k] + "=" + enc;
      sep = ",";
      nFields++;
    }
    if (nFields === 0) return { error: "no field values in this row" };
    if (timeIdx >= 0) {
      const t = (values[timeIdx] ?? "").trim();
      if (t === "") return { error: `empty time in column ${header[timeIdx]}` };
      let ts;
      if (timeFormat === "iso") {
        ts = isoToNanos(t);
        if (ts === null) return { error: `time "${t}" is not an RFC 3339 / ISO 8601 timestamp` };
      } else {
        ts = epochToNanos(t, timeFormat);
        if (ts === null) return { error: `time "${t}" is not an epoch value in ${timeFormat}` };
      }
      out += " " + ts;
    }
    return { line: out };
  }
  return { convert, precision };
}

/**
 * Converts records into batches of at most `batchSize` lines. Each batch
 * carries its body and, per physical body line, the CSV line it came from,
 * so the server's per-line errors map back to the file. Rows that cannot be
 * converted are returned in `errors` with their CSV line.
 */
export function toBatches(records, convert, batchSize = 5000) {
  const batches = [];
  const errors = [];
  let lines = [];
  let map = [];
  const flush = () => {
    if (lines.length) batches.push({ body: lines.join("\n") + "\n", lineMap: map, count: lines.length });
    lines = [];
    map = [];
  };
  for (const r of records) {
    const res = convert(r.values);
    if (res.error) {
      errors.push({ csvLine: r.line, reason: res.error });
      continue;
    }
    lines.push(res.line);
    // A string field with newlines spans several physical lines.
    const extra = (res.line.match(/\n/g) || []).length;
    for (let k = 0; k <= extra; k++) map.push(r.line);
    if (lines.length >= batchSize) flush();
  }
  flush();
  return { batches, errors };
}
