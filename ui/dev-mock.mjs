// A stand-in for the Sluice HTTP API, for working on the console without a
// server (`node dev-server.mjs --mock`), and the sample status/schema that
// the dev server shows when a real server answers 404 for them. It answers a
// few query shapes only: generate_series, the synthetic tables cpu and mem,
// system.dead_letters, SELECT of literals, and a syntax error otherwise.

const started = Date.now();
const written = { http: 0, dbs: { telegraf: 0 } };
let writes = 0;
let rejectedLines = 0;

const HOSTS = ["edge-a", "edge-b", "edge-c"];
const TS = 'Timestamp(ns, "UTC")';

export function sampleStatus() {
  const t = (Date.now() - started) / 1000;
  const wave = (base, period, phase = 0) => Math.round(base * t + base * 0.3 * period * Math.sin((t + phase) / period));
  const http = wave(5000, 20) + written.http;
  const tcp = wave(1200, 15, 3);
  const mqtt = wave(300, 10, 5);
  const kafka = wave(800, 30, 1);
  const lag = Math.max(0, Math.round(40 + 35 * Math.sin(t / 7)));
  return {
    version: "0.1.0-dev",
    uptime_seconds: t,
    now_ms: Date.now(),
    auth: false,
    ingest: {
      frontends: [
        { name: "http", enabled: true, writes: Math.round(t * 10) + writes, rows: http, rejected_lines: 2 + rejectedLines, failures: 0 },
        { name: "tcp", enabled: true, writes: Math.round(t * 4), rows: tcp, rejected_lines: 0, failures: 0 },
        { name: "mqtt", enabled: true, writes: Math.round(t * 3), rows: mqtt, rejected_lines: 1, failures: 0 },
        { name: "kafka", enabled: true, writes: Math.round(t), rows: kafka, rejected_lines: 0, failures: 0 },
      ],
      databases: [
        { name: "telegraf", rows: http + tcp },
        { name: "iot", rows: mqtt + kafka },
        ...Object.entries(written.dbs).filter(([n]) => n !== "telegraf").map(([name, rows]) => ({ name, rows })),
      ],
    },
    mqtt: { addr: "127.0.0.1:1883", clients: 3, sessions: 4, subscriptions: 5, messages_stored: mqtt, rows_stored: mqtt, dead_letters: 2 },
    kafka: {
      messages: kafka,
      rows: kafka,
      dead_letters: 0,
      offset_commit_failures: 0,
      backpressure_pauses: 0,
      partitions: [
        { topic: "metrics", partition: 0, assigned: true, committed_offset: Math.round(kafka / 2), high_watermark: Math.round(kafka / 2) + lag, lag, rows_per_second: 400 },
        { topic: "metrics", partition: 1, assigned: true, committed_offset: Math.round(kafka / 2), high_watermark: Math.round(kafka / 2), lag: 0, rows_per_second: 400 },
        { topic: "metrics", partition: 2, assigned: false, committed_offset: null, high_watermark: null, lag: null, rows_per_second: 0 },
      ],
    },
    storage: {
      buffer_bytes: Math.round(60e6 + 50e6 * Math.sin(t / 9)),
      memory_limit_bytes: 268435456,
      chunks: 4 + Math.floor(t / 30),
      chunks_written: 4 + Math.floor(t / 30),
      compactions: Math.floor(t / 90),
      backpressure_rejections: 0,
      log_syncs: Math.round(t * 20),
      log_bytes_synced: Math.round(t * 600000),
      shards: [0, 1].map((shard) => ({
        shard,
        buffer_bytes: Math.round(30e6 + 25e6 * Math.sin(t / 9 + shard)),
        chunks: 2 + Math.floor(t / 60),
        chunks_written: 2 + Math.floor(t / 60),
        compactions: Math.floor(t / 180),
        backpressure_rejections: 0,
        log_syncs: Math.round(t * 10),
        raft_last_index: Math.round(t * 10),
      })),
    },
    query: { queries: 12, chunks_from_stats: 3, chunks_decoded: 9 },
    dead_letters: 2,
  };
}

export function sampleSchema() {
  const col = (name, type, role) => ({ name, type, role });
  return {
    databases: [
      {
        name: "telegraf",
        tables: [
          { name: "cpu", kind: "timeseries", columns: [col("host", "Utf8", "tag"), col("usage_user", "Float64", "field"), col("usage_system", "Float64", "field"), col("time", TS, "time")],
            rows: 1000000, chunks: 12, bytes_on_disk: 9_800_000, bytes_raw: 64_000_000, dedup: "last", retention: "7d" },
          { name: "mem", kind: "timeseries", columns: [col("host", "Utf8", "tag"), col("used_percent", "Float64", "field"), col("time", TS, "time")],
            rows: 250000, chunks: 3, bytes_on_disk: 1_200_000, bytes_raw: 9_000_000, dedup: "last", retention: null },
          { name: "devices", kind: "relational", columns: [{ name: "id", type: "Int64", role: "key", nullable: false }, { name: "site", type: "Utf8", role: "column", nullable: true }],
            rows: null, comment: "Device inventory" },
        ],
      },
      { name: "iot", tables: [{ name: "readings", kind: "timeseries", columns: [col("device", "Utf8", "tag"), col("temp", "Float64", "field"), col("time", TS, "time")], rows: 0, chunks: 0, bytes_on_disk: 0, bytes_raw: 0, dedup: "none", retention: "30d" }] },
    ],
  };
}

const UNIT_S = { second: 1, minute: 60, hour: 3600, day: 86400, week: 604800 };

function intervalSeconds(sql) {
  const m = /now\(\)\s*-\s*interval\s*'(\d+)\s*([a-z]+?)s?'/i.exec(sql);
  if (!m) return 3600;
  return +m[1] * (UNIT_S[m[2].toLowerCase()] || 3600);
}

function series(sql, fields) {
  const span = intervalSeconds(sql);
  const points = 360;
  const step = Math.max(1, Math.round(span / points));
  const now = Math.floor(Date.now() / 1000 / step) * step;
  const only = /host\s*=\s*'([^']+)'/i.exec(sql);
  const rows = [];
  for (let t = now - span; t <= now; t += step) {
    for (const [hi, host] of HOSTS.entries()) {
      if (only && only[1] !== host) continue;
      const vals = fields.map((_, fi) => +(40 + 25 * Math.sin(t / (span / 6) + hi * 1.3 + fi) + 5 * Math.sin(t / 37 + hi)).toFixed(3));
      rows.push([new Date(t * 1000).toISOString().replace(".000Z", "Z"), host, ...vals]);
    }
  }
  if (/order\s+by\s+time\s+desc/i.test(sql)) rows.reverse();
  return {
    columns: [{ name: "time", type: TS }, { name: "host", type: "Utf8" }, ...fields.map((f) => ({ name: f, type: "Float64" }))],
    rows,
  };
}

function deadLetters() {
  const now = Date.now();
  return {
    columns: [{ name: "time", type: TS }, { name: "source", type: "Utf8" }, { name: "topic", type: "Utf8" }, { name: "error", type: "Utf8" }, { name: "payload", type: "Utf8" }],
    rows: [
      [new Date(now - 5000).toISOString(), "mqtt", "sensors/7/temp", "invalid JSON: expected value at line 1 column 1", "temp=oops"],
      [new Date(now - 65000).toISOString(), "kafka", "metrics", "field usage_user: type conflict (float vs string)", 'cpu,host=a usage_user="high"'],
    ],
  };
}

class SqlError extends Error {
  constructor(message, sqlstate, position, status = 400) {
    super(message);
    this.sqlstate = sqlstate;
    this.position = position;
    this.status = status;
  }
}

function lineCol(sql, offset) {
  const before = sql.slice(0, offset).split("\n");
  return { line: before.length, column: before[before.length - 1].length + 1 };
}

/** Answers one SQL text (the last statement counts). */
export function mockQuery(fullSql) {
  const statements = fullSql.split(";").filter((s) => s.trim());
  const sql = statements[statements.length - 1] || "";
  const offset = fullSql.lastIndexOf(sql);
  const first = /\S+/.exec(sql);
  if (!first || !/^(select|with)$/i.test(first[0])) {
    const pos = lineCol(fullSql, offset + (first ? first.index : 0));
    throw new SqlError(`SQL error: ParserError("Expected: an SQL statement, found: ${first ? first[0] : "EOF"} at Line: ${pos.line}, Column: ${pos.column}")`, "42601", pos);
  }
  const typo = /\b(FROMM|SELEC|WHER|GROUPBY)\b/i.exec(sql);
  if (typo) {
    const pos = lineCol(fullSql, offset + typo.index);
    throw new SqlError(`SQL error: ParserError("Expected: end of statement, found: ${typo[0]} at Line: ${pos.line}, Column: ${pos.column}")`, "42601", pos);
  }
  const limitM = /\blimit\s+(\d+)/i.exec(sql);
  const limit = limitM ? +limitM[1] : Infinity;
  const cut = (r) => ({ ...r, rows: r.rows.slice(0, limit) });
  const gs = /generate_series\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)/i.exec(sql);
  if (gs) {
    const rows = [];
    for (let i = +gs[1]; i <= +gs[2] && rows.length < limit; i++) rows.push([i]);
    return { columns: [{ name: "value", type: "Int64" }], rows };
  }
  const from = /\bfrom\s+(?:"?(\w+)"?\.)?"?(\w+)"?/i.exec(sql);
  if (from) {
    const table = from[2].toLowerCase();
    if (table === "dead_letters") return cut(deadLetters());
    if (table === "cpu") return cut(series(sql, ["usage_user", "usage_system"]));
    if (table === "mem") return cut(series(sql, ["used_percent"]));
    if (table === "devices") return cut({ columns: [{ name: "id", type: "Int64" }, { name: "site", type: "Utf8" }], rows: [[1, "berlin"], [2, null], [3, "oslo"]] });
    throw new SqlError(`Error during planning: table 'datafusion.public.${table}' not found`, "42P01", null);
  }
  const list = sql.replace(/^\s*select\s+/i, "").split(",").map((s) => s.trim());
  const row = list.map((v) => (/^-?\d+(\.\d+)?$/.test(v) ? +v : /^'.*'$/.test(v) ? v.slice(1, -1) : v === "now()" ? new Date().toISOString() : null));
  const columns = list.map((v) => ({ name: v, type: /^-?\d+$/.test(v) ? "Int64" : /^-?\d+\.\d+$/.test(v) ? "Float64" : v === "now()" ? TS : "Utf8" }));
  return { columns, rows: [row] };
}

export function toCsv({ columns, rows }) {
  const q = (v) => (v == null ? "" : /[",\n]/.test(String(v)) ? '"' + String(v).replace(/"/g, '""') + '"' : String(v));
  return [columns.map((c) => q(c.name)).join(","), ...rows.map((r) => r.map(q).join(","))].join("\n") + "\n";
}

/** /write: counts lines, rejects those without a field set. */
export function mockWrite(db, body) {
  const lines = body.split("\n");
  const rejected = [];
  let ok = 0;
  lines.forEach((l, i) => {
    const s = l.trim();
    if (!s || s.startsWith("#")) return;
    // measurement[,tags] fields [time]; a field set needs key=value.
    if (!/^(?:[^\s\\]|\\.)+\s+(?:[^\s=\\]|\\.)+=\S/.test(s)) rejected.push({ line: i + 1, reason: "invalid line protocol: expected a field set after the measurement" });
    else ok++;
  });
  writes++;
  written.http += ok;
  written.dbs[db] = (written.dbs[db] || 0) + ok;
  rejectedLines += rejected.length;
  if (!rejected.length) return { status: 204 };
  return {
    status: 400,
    body: {
      error: `partial write: ${rejected.length} line(s) rejected, ${ok} written; first: line ${rejected[0].line}: ${rejected[0].reason}`,
      lines_written: ok,
      lines_rejected: rejected.length,
      rejected: rejected.slice(0, 100),
      rejected_truncated: rejected.length > 100,
    },
  };
}

export { SqlError };
