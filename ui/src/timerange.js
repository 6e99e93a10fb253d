// Rewrites the time bounds of a query for the chart's range presets. Pure
// text work on a light tokenizer (strings, quoted names, comments and
// parentheses are skipped), no DOM.

export const PRESETS = {
  "5m": "5 minutes",
  "15m": "15 minutes",
  "1h": "1 hour",
  "6h": "6 hours",
  "24h": "24 hours",
  "7d": "7 days",
};

/**
 * Splits SQL into significant tokens with their offsets: words, quoted
 * identifiers, string literals, punctuation. Comments and blanks are left out.
 */
export function tokenize(sql) {
  const out = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === "-" && sql[i + 1] === "-") {
      while (i < n && sql[i] !== "\n") i++;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < n) {
        if (sql[j] === c) {
          if (sql[j + 1] === c) j += 2;
          else break;
        } else j++;
      }
      out.push({ kind: c === "'" ? "string" : "ident", text: sql.slice(i, j + 1), start: i, end: Math.min(j + 1, n) });
      i = j + 1;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$]/.test(sql[j])) j++;
      out.push({ kind: "word", text: sql.slice(i, j), start: i, end: j });
      i = j;
    } else if (/[0-9]/.test(c)) {
      let j = i + 1;
      while (j < n && /[0-9.eE]/.test(sql[j])) j++;
      out.push({ kind: "number", text: sql.slice(i, j), start: i, end: j });
      i = j;
    } else {
      const two = sql.slice(i, i + 2);
      const len = [">=", "<=", "<>", "!=", "::", "||"].includes(two) ? 2 : 1;
      out.push({ kind: "punct", text: sql.slice(i, i + len), start: i, end: i + len });
      i += len;
    }
  }
  return out;
}

const lower = (t) => (t && t.kind === "word" ? t.text.toLowerCase() : null);

/** Token range [from, to) of the last statement (they are split on `;`). */
function lastStatement(toks) {
  let from = 0;
  let to = toks.length;
  while (to > 0 && toks[to - 1].text === ";") to--;
  for (let i = to - 1; i >= 0; i--) {
    if (toks[i].kind === "punct" && toks[i].text === ";") {
      from = i + 1;
      break;
    }
  }
  return [from, to];
}

function isTimeColumn(t, name) {
  if (!t) return false;
  if (t.kind === "word") return t.text.toLowerCase() === name;
  if (t.kind === "ident") return t.text.slice(1, -1) === name;
  return false;
}

/** Index past the end of a bound's right-hand side (stops at AND/OR/clause words or `)` at depth 0). */
function exprEnd(toks, i, to) {
  let depth = 0;
  const stop = new Set(["and", "or", "group", "order", "limit", "offset", "having", "window", "union", "intersect", "except", "fetch"]);
  for (; i < to; i++) {
    const t = toks[i];
    if (t.text === "(") depth++;
    else if (t.text === ")") {
      if (depth === 0) return i;
      depth--;
    } else if (depth === 0 && stop.has(lower(t))) return i;
  }
  return i;
}

/**
 * Index of the first token of a bound's left-hand side ending just before
 * token `i` (stops after AND/OR/WHERE/ON/…, a comma or `(` at depth 0).
 */
function exprStart(toks, i, from) {
  let depth = 0;
  const stop = new Set(["and", "or", "not", "where", "on", "having", "when", "then", "else", "select", "from"]);
  for (; i >= from; i--) {
    const t = toks[i];
    if (t.text === ")") depth++;
    else if (t.text === "(") {
      if (depth === 0) return i + 1;
      depth--;
    } else if (depth === 0 && (t.text === "," || stop.has(lower(t)))) return i + 1;
  }
  return from;
}

/**
 * Returns the SQL with its time range set to `interval` (e.g. "1 hour"):
 * existing lower bounds on the time column (`time > now() - INTERVAL '…'`,
 * `time >= '2026-…'`, `time BETWEEN a AND b`, and reversed: `'2026-…' <= time`)
 * are replaced, literal upper bounds become `time <= now()`; with no bound, one is added to the WHERE
 * clause of the last statement (or a WHERE is inserted before GROUP BY /
 * ORDER BY / LIMIT). `changed` is false when there was no FROM to bound.
 */
export function rewriteTimeRange(sql, interval, column = "time") {
  const toks = tokenize(sql);
  const [from, to] = lastStatement(toks);
  const boundFor = (col) => `${col} >= now() - INTERVAL '${interval}'`;
  const bound = boundFor(/^[a-z_][a-z0-9_]*$/.test(column) ? column : '"' + column.replace(/"/g, '""') + '"');
  const edits = []; // {start, end, text}
  let depth = 0;
  let sawLower = false;
  for (let i = from; i < to; i++) {
    const t = toks[i];
    if (t.text === "(") depth++;
    if (t.text === ")") depth--;
    if (!isTimeColumn(t, column)) continue;
    // Skip a qualified name's prefix: handled since we look at the last part.
    if (toks[i + 1] && toks[i + 1].text === ".") continue;
    const op = toks[i + 1];
    const opText = op ? lower(op) || op.text : null;
    const q = qualifiedStartIndex(toks, i);
    const revOp = q - 2 >= from ? toks[q - 1].text : null;
    if (!["<", "<=", ">", ">=", "between"].includes(opText) && ["<", "<=", ">", ">="].includes(revOp)) {
      // Reversed: `lhs < time` is a lower bound, `lhs > time` an upper one.
      const begin = exprStart(toks, q - 2, from);
      if (begin > q - 2) continue;
      const lhs = toks.slice(begin, q - 1);
      const span = { start: toks[begin].start, end: t.end };
      const name = sql.slice(toks[q].start, t.end);
      if (edits.length && edits[edits.length - 1].end > span.start) continue;
      if (revOp[0] === "<") {
        edits.push({ ...span, text: boundFor(name) });
        sawLower = true;
      } else if (lhs.some((r) => r.kind === "string") && !lhs.some((r) => lower(r) === "now")) {
        edits.push({ ...span, text: name + " <= now()" });
      }
      continue;
    }
    if (!op) continue;
    if (opText === ">" || opText === ">=") {
      const end = exprEnd(toks, i + 2, to);
      if (end <= i + 2) continue;
      const start = qualifiedStart(toks, i);
      edits.push({ start, end: toks[end - 1].end, text: boundFor(sql.slice(start, t.end)) });
      sawLower = true;
      i = end - 1;
    } else if (opText === "<" || opText === "<=") {
      const end = exprEnd(toks, i + 2, to);
      const rhs = toks.slice(i + 2, end);
      // A bound in the past (a literal) would empty the new range.
      const literal = rhs.some((r) => r.kind === "string") && !rhs.some((r) => lower(r) === "now");
      if (literal) edits.push({ start: toks[i + 1].start, end: toks[end - 1].end, text: "<= now()" });
      i = end - 1;
    } else if (opText === "between") {
      // time BETWEEN a AND b: find the AND at this depth, then b's end.
      let k = i + 2;
      let d = 0;
      for (; k < to; k++) {
        if (toks[k].text === "(") d++;
        else if (toks[k].text === ")") d--;
        else if (d === 0 && lower(toks[k]) === "and") break;
      }
      if (k >= to) continue;
      const end = exprEnd(toks, k + 1, to);
      const start = qualifiedStart(toks, i);
      edits.push({ start, end: toks[end - 1].end, text: boundFor(sql.slice(start, t.end)) });
      sawLower = true;
      i = end - 1;
    }
  }
  if (sawLower) return { sql: applyEdits(sql, edits), changed: true };

  // No lower bound: add one at the top level of the last statement.
  depth = 0;
  let fromAt = -1;
  let whereAt = -1;
  let clauseEnd = -1; // first top-level token after the WHERE / FROM part
  for (let i = from; i < to; i++) {
    const t = toks[i];
    if (t.text === "(") depth++;
    else if (t.text === ")") depth--;
    if (depth !== 0) continue;
    const w = lower(t);
    if (w === "from" && fromAt < 0) fromAt = i;
    else if (w === "where" && fromAt >= 0 && whereAt < 0) whereAt = i;
    else if (fromAt >= 0 && clauseEnd < 0) {
      const next = lower(toks[i + 1]);
      if (
        ((w === "group" || w === "order") && next === "by") ||
        ["having", "window", "limit", "offset", "fetch", "union", "intersect", "except", "qualify"].includes(w)
      ) {
        clauseEnd = i;
      }
    }
  }
  if (fromAt < 0) return { sql, changed: false };
  const endTok = clauseEnd >= 0 ? toks[clauseEnd] : null;
  if (whereAt >= 0) {
    const condFirst = toks[whereAt + 1];
    const condLast = toks[(clauseEnd >= 0 ? clauseEnd : to) - 1];
    if (!condFirst || condLast === toks[whereAt]) return { sql, changed: false };
    let d = 0;
    let hasOr = false;
    for (let i = whereAt + 1; i < (clauseEnd >= 0 ? clauseEnd : to); i++) {
      if (toks[i].text === "(") d++;
      else if (toks[i].text === ")") d--;
      else if (d === 0 && lower(toks[i]) === "or") hasOr = true;
    }
    if (hasOr) edits.push({ start: condFirst.start, end: condFirst.start, text: "(" });
    edits.push({ start: condLast.end, end: condLast.end, text: (hasOr ? ")" : "") + " AND " + bound });
    return { sql: applyEdits(sql, edits), changed: true };
  }
  if (endTok) {
    // Keep the clause on its own line when the query is laid out that way.
    const before = sql.slice(0, endTok.start);
    const nl = /\n[ \t]*$/.test(before);
    const text = nl ? `WHERE ${bound}\n` : `WHERE ${bound} `;
    edits.push({ start: endTok.start, end: endTok.start, text });
    return { sql: applyEdits(sql, edits), changed: true };
  }
  const last = toks[to - 1];
  edits.push({ start: last.end, end: last.end, text: ` WHERE ${bound}` });
  return { sql: applyEdits(sql, edits), changed: true };
}

/** Index of the first token of a possibly qualified name (`t.time`, `"db"."t".time`) ending at token i. */
function qualifiedStartIndex(toks, i) {
  let k = i;
  while (k >= 2 && toks[k - 1].text === "." && (toks[k - 2].kind === "word" || toks[k - 2].kind === "ident")) k -= 2;
  return k;
}

/** Start offset of a possibly qualified name ending at token i. */
function qualifiedStart(toks, i) {
  return toks[qualifiedStartIndex(toks, i)].start;
}

function applyEdits(sql, edits) {
  edits.sort((a, b) => b.start - a.start || b.end - a.end);
  let out = sql;
  for (const e of edits) out = out.slice(0, e.start) + e.text + out.slice(e.end);
  return out;
}
