// Pure helpers (no DOM): type classification, time parsing, number and byte
// formatting, SQL identifier quoting. Used by the views and by the node tests.

/** True for Arrow type names that carry a point in time. */
export function isTimeType(type) {
  return typeof type === "string" && /^(Timestamp|Date(32|64))/.test(type);
}

/** True for Arrow numeric type names (integers, floats, decimals). */
export function isNumericType(type) {
  return typeof type === "string" && /^(U?Int(8|16|32|64)|Float(16|32|64)|Decimal)/.test(type);
}

/** True for Arrow string type names (tags and text columns). */
export function isStringType(type) {
  return typeof type === "string" && /^(Utf8|LargeUtf8|Utf8View)$/.test(type);
}

const TIME_RE =
  /^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?)?\s*(Z|[+-]\d\d(?::?\d\d)?)?$/i;

/**
 * Parses an RFC 3339 / ISO 8601 timestamp (any number of fraction digits,
 * `Z`, an offset or none; none means UTC, as the server prints naive
 * timestamps) into epoch milliseconds, fraction kept. NaN when not a time.
 */
export function parseTimeMs(s) {
  if (typeof s !== "string") return typeof s === "number" ? s : NaN;
  const m = TIME_RE.exec(s.trim());
  if (!m) return NaN;
  let ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
  if (m[7]) ms += parseFloat(m[7]) * 1000;
  const tz = m[8];
  if (tz && tz !== "Z" && tz !== "z") {
    const sign = tz[0] === "-" ? -1 : 1;
    const digits = tz.slice(1).replace(":", "");
    const off = +digits.slice(0, 2) * 60 + +(digits.slice(2, 4) || 0);
    ms -= sign * off * 60000;
  }
  return ms;
}

/**
 * Epoch nanoseconds (as a decimal string, exact) of an ISO timestamp, or
 * null. Fraction digits past nanoseconds are dropped.
 */
export function isoToNanos(s) {
  const m = TIME_RE.exec(String(s).trim());
  if (!m) return null;
  const base = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
  if (!Number.isFinite(base)) return null;
  let frac = 0n;
  if (m[7]) frac = BigInt((m[7].slice(1) + "000000000").slice(0, 9));
  let ns = BigInt(base) * 1000000n + frac;
  const tz = m[8];
  if (tz && tz !== "Z" && tz !== "z") {
    const sign = tz[0] === "-" ? -1n : 1n;
    const digits = tz.slice(1).replace(":", "");
    const off = BigInt(+digits.slice(0, 2) * 60 + +(digits.slice(2, 4) || 0));
    ns -= sign * off * 60n * 1000000000n;
  }
  return ns.toString();
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n) {
  if (n == null || !Number.isFinite(+n)) return "–";
  n = +n;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? String(n) : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[i];
}

/** Grouped integer / short decimal for counters and rates. */
export function formatNumber(n, digits = 0) {
  if (n == null || !Number.isFinite(+n)) return "–";
  return (+n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** Compression ratio raw/disk as "8.0×", "–" when it cannot be computed. */
export function formatRatio(raw, disk) {
  if (!Number.isFinite(+raw) || !Number.isFinite(+disk) || +disk <= 0 || +raw <= 0) return "–";
  return (+raw / +disk).toFixed(1) + "×";
}

/** 3725 s → "1h 2m". */
export function formatDuration(sec) {
  if (!Number.isFinite(+sec)) return "–";
  sec = Math.floor(+sec);
  const d = Math.floor(sec / 86400);
  const h = Math.floor((sec % 86400) / 3600);
  const m = Math.floor((sec % 3600) / 60);
  const s = sec % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

const PLAIN_IDENT = /^[a-z_][a-z0-9_]*$/;
// Words that need quoting even though they look plain.
const RESERVED = new Set(
  ("all and any array as asc between both case cast check collate column constraint create " +
    "current_date current_time current_timestamp default desc distinct do else end except " +
    "false fetch for foreign from grant group having in initially intersect into is join " +
    "lateral leading limit localtime localtimestamp not null offset on only or order placing " +
    "primary references returning select session_user some symmetric table then to trailing " +
    "true union unique user using variadic when where window with").split(" "),
);

/** Quotes an SQL identifier only where PostgreSQL rules need it. */
export function quoteIdent(name) {
  if (PLAIN_IDENT.test(name) && !RESERVED.has(name)) return name;
  return '"' + String(name).replace(/"/g, '""') + '"';
}
