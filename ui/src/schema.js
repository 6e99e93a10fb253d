// The schema: loaded from /api/v1/schema (or, from a server without it,
// from information_schema), shown as a browser, and handed to the editor
// for completion.

import { $, h, setChildren } from "./dom.js";
import { apiJson, runSql, ApiError } from "./api.js";
import { formatBytes, formatNumber, formatRatio, quoteIdent } from "./format.js";

let current = { databases: [] };
const listeners = new Set();

export const schemaStore = {
  get: () => current,
  subscribe(fn) {
    listeners.add(fn);
  },
  async load() {
    try {
      current = normalize(await apiJson("/api/v1/schema"));
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404) throw e;
      current = await fromInformationSchema();
    }
    for (const fn of listeners) fn(current);
    return current;
  },
};

function normalize(doc) {
  const dbs = Array.isArray(doc && doc.databases) ? doc.databases : [];
  return {
    databases: dbs.map((d) => ({
      name: String(d.name),
      comment: d.comment || null,
      tables: (d.tables || []).map((t) => ({ ...t, columns: t.columns || [] })),
    })),
  };
}

/** Older servers: columns from information_schema, without statistics. */
async function fromInformationSchema() {
  const res = await runSql(
    "SELECT table_schema, table_name, column_name, data_type, is_nullable FROM information_schema.columns " +
      "WHERE table_schema <> 'information_schema' ORDER BY table_schema, table_name, ordinal_position",
  );
  const dbs = new Map();
  for (const [db, table, col, type, nullable] of res.rows) {
    if (!dbs.has(db)) dbs.set(db, new Map());
    const tables = dbs.get(db);
    if (!tables.has(table)) tables.set(table, { name: table, kind: "unknown", columns: [] });
    tables.get(table).columns.push({ name: col, type, role: col === "time" ? "time" : "column", nullable: nullable === "YES" });
  }
  return {
    databases: [...dbs].map(([name, tables]) => ({ name, tables: [...tables.values()] })),
  };
}

/** lang-sql completion namespace: database → table → columns. */
export function completionNamespace(schema) {
  const ns = {};
  for (const db of schema.databases) {
    const tables = {};
    for (const t of db.tables) {
      tables[t.name] = {
        self: { label: t.name, type: "type", detail: t.kind === "relational" ? "table" : t.kind === "timeseries" ? "series" : "" },
        children: t.columns.map((c) => ({ label: c.name, type: "property", detail: `${c.type}${c.role && c.role !== "column" ? " " + c.role : ""}` })),
      };
    }
    ns[db.name] = { self: { label: db.name, type: "namespace", detail: "database" }, children: tables };
  }
  return ns;
}

/** SELECT * FROM "db"."table" LIMIT 100, quoting only where needed. */
export function selectStarFor(db, table) {
  return `SELECT * FROM ${quoteIdent(db)}.${quoteIdent(table)} LIMIT 100`;
}

const ROLE_ORDER = { key: 0, time: 1, tag: 2, field: 3, column: 4 };

export function initSchemaView({ onTable, onColumn }) {
  const tree = $("#schema-tree");
  const filter = $("#schema-filter");

  function stat(label, value) {
    return h("div", { class: "stat" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value));
  }

  function columnButton(db, t, c) {
    return h(
      "button",
      {
        type: "button",
        class: `schema-column role-${c.role || "column"}`,
        dataset: { db: db.name, table: t.name, column: c.name },
        title: `Insert ${c.name} at the cursor` + (c.comment ? ` — ${c.comment}` : ""),
        onclick: () => onColumn(quoteIdent(c.name)),
      },
      h("span", { class: "col-name" }, c.name),
      h("span", { class: "col-type" }, c.type),
      c.role && c.role !== "column" ? h("span", { class: `badge role ${c.role}` }, c.role === "key" ? "PK" : c.role) : null,
      t.kind === "relational" && c.nullable === false && c.role !== "key" ? h("span", { class: "badge" }, "NOT NULL") : null,
    );
  }

  function tableCard(db, t) {
    const cols = [...t.columns].sort((a, b) => (ROLE_ORDER[a.role] ?? 9) - (ROLE_ORDER[b.role] ?? 9));
    const ts = t.kind === "timeseries";
    const stats = ts
      ? [
          stat("Rows", formatNumber(t.rows)),
          stat("Chunks", formatNumber(t.chunks)),
          stat("On disk", formatBytes(t.bytes_on_disk)),
          stat("Raw", formatBytes(t.bytes_raw)),
          stat("Compression", formatRatio(t.bytes_raw, t.bytes_on_disk)),
          stat("Dedup", t.dedup || "–"),
          stat("Retention", t.retention || "forever"),
        ]
      : t.kind === "relational"
        ? [
            t.rows != null ? stat("Rows", formatNumber(t.rows)) : null,
            stat("Primary key", cols.filter((c) => c.role === "key").map((c) => c.name).join(", ") || "–"),
          ]
        : [];
    return h(
      "div",
      { class: `table-card ${t.kind || ""}` },
      h(
        "div",
        { class: "table-card-head" },
        h(
          "button",
          {
            type: "button",
            class: "schema-table",
            dataset: { db: db.name, table: t.name },
            title: `Query ${db.name}.${t.name}`,
            onclick: () => onTable(selectStarFor(db.name, t.name), db.name),
          },
          t.name,
        ),
        h("span", { class: "badge kind" }, ts ? "time series" : t.kind === "relational" ? "relational" : t.kind === "view" ? "view" : "table"),
      ),
      t.comment ? h("p", { class: "muted small comment" }, t.comment) : null,
      stats.length ? h("div", { class: "stats" }, stats) : null,
      h("div", { class: "schema-columns" }, cols.map((c) => columnButton(db, t, c))),
    );
  }

  function render() {
    const q = filter.value.trim().toLowerCase();
    const dbs = current.databases;
    if (!dbs.length) {
      setChildren(tree, h("p", { class: "muted" }, "No databases yet. Write some data (Write view) and reload."));
      return;
    }
    setChildren(
      tree,
      dbs.map((db) => {
        const tables = db.tables.filter((t) => !q || t.name.toLowerCase().includes(q) || db.name.toLowerCase().includes(q));
        if (q && !tables.length) return null;
        const groups = [
          ["Time-series tables", tables.filter((t) => t.kind === "timeseries")],
          ["Relational tables", tables.filter((t) => t.kind === "relational")],
          ["Views", tables.filter((t) => t.kind === "view")],
          ["Tables", tables.filter((t) => !["timeseries", "relational", "view"].includes(t.kind))],
        ];
        return h(
          "details",
          { class: "schema-db", open: true, dataset: { db: db.name } },
          h("summary", null, h("strong", null, db.name), h("span", { class: "muted small" }, ` ${db.tables.length} ${db.tables.length === 1 ? "table" : "tables"}`),
            db.comment ? h("span", { class: "muted small" }, " — " + db.comment) : null),
          groups.filter(([, ts]) => ts.length).map(([title, ts]) => [h("h4", null, title), h("div", { class: "table-cards" }, ts.map((t) => tableCard(db, t)))]),
        );
      }),
    );
  }

  async function reload() {
    setChildren(tree, h("p", { class: "muted" }, "Loading…"));
    try {
      await schemaStore.load();
    } catch (e) {
      setChildren(tree, h("div", { class: "error-box" }, "Cannot load the schema: " + e.message));
    }
  }

  schemaStore.subscribe(render);
  filter.addEventListener("input", render);
  $("#schema-reload").addEventListener("click", reload);
  return { reload };
}
