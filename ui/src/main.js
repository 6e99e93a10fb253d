// Entry point: views and navigation, theme, database selector, and the glue
// between the editor, the schema and the other views.

import { $, h, setChildren, loadJson, saveJson } from "./dom.js";
import { apiJson, initLogin, onTokenChange, getToken } from "./api.js";
import { createEditor } from "./editor.js";
import { initSqlView } from "./sqlview.js";
import { initSchemaView, schemaStore, completionNamespace } from "./schema.js";
import { initIngestView } from "./ingest.js";
import { initWriteView } from "./write.js";
import { formatDuration } from "./format.js";

const VIEWS = ["sql", "schema", "ingest", "write"];
const THEME_KEY = "sluice.theme";
const DB_KEY = "sluice.db";
const DRAFT_KEY = "sluice.draft";

// ---- theme -----------------------------------------------------------------
function currentTheme() {
  const set = document.documentElement.dataset.theme;
  if (set) return set;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("#theme-toggle").title = theme === "dark" ? "Switch to the light theme" : "Switch to the dark theme";
}

const storedTheme = loadJson(THEME_KEY, null);
if (storedTheme === "dark" || storedTheme === "light") applyTheme(storedTheme);

// ---- editor and views --------------------------------------------------------
const dbSelect = $("#db-select");
const getDb = () => dbSelect.value;

let sqlView;
const editor = createEditor($("#editor"), {
  doc: loadJson(DRAFT_KEY, "SELECT * FROM generate_series(1, 10)"),
  onRun: () => sqlView.run(),
});
sqlView = initSqlView({ editor, getDb });

let draftTimer = 0;
editor.view.dom.addEventListener("keyup", () => {
  clearTimeout(draftTimer);
  draftTimer = setTimeout(() => saveJson(DRAFT_KEY, editor.getText()), 500);
});

function setQuery(text, db) {
  editor.setText(text);
  if (db !== undefined) sqlView.selectDb(db);
  saveJson(DRAFT_KEY, text);
}

const schemaView = initSchemaView({
  onTable: (sql, db) => {
    setQuery(sql, db);
    showView("sql");
    editor.focus();
  },
  onColumn: (name) => {
    showView("sql");
    editor.insertAtCursor(name);
  },
});

function updateServerInfo(st) {
  const parts = [];
  if (st.version) parts.push("v" + st.version);
  if (st.uptime_seconds != null) parts.push("up " + formatDuration(st.uptime_seconds));
  $("#server-info").textContent = parts.join(" · ");
}

const ingestView = initIngestView({ onStatus: updateServerInfo });
const writeView = initWriteView({ getDb, onWritten: () => schemaStore.load().catch(() => {}) });

function showView(name) {
  if (!VIEWS.includes(name)) name = "sql";
  for (const v of VIEWS) {
    $(`#view-${v}`).hidden = v !== name;
    const b = document.querySelector(`button[data-view="${v}"]`);
    b.classList.toggle("active", v === name);
    b.setAttribute("aria-current", v === name ? "page" : "false");
  }
  if (name === "ingest") ingestView.show();
  else ingestView.hide();
  if (name === "write") writeView.syncDb();
  if (name === "schema" && !schemaStore.get().databases.length) schemaView.reload();
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
}

for (const b of document.querySelectorAll("button[data-view]")) b.addEventListener("click", () => showView(b.dataset.view));
window.addEventListener("hashchange", () => showView(location.hash.slice(1)));

$("#theme-toggle").addEventListener("click", () => {
  const next = currentTheme() === "dark" ? "light" : "dark";
  applyTheme(next);
  saveJson(THEME_KEY, next);
  sqlView.retheme();
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  if (!loadJson(THEME_KEY, null)) sqlView.retheme();
});

// ---- databases -------------------------------------------------------------
schemaStore.subscribe((schema) => {
  const keep = dbSelect.value || loadJson(DB_KEY, "");
  const names = schema.databases.map((d) => d.name);
  setChildren(dbSelect, h("option", { value: "" }, "(none)"), names.map((n) => h("option", { value: n }, n)));
  if (keep && !names.includes(keep)) dbSelect.append(h("option", { value: keep }, keep));
  // With no earlier choice, the database holding the most rows.
  const rows = (d) => d.tables.reduce((n, t) => n + (+t.rows || 0), 0);
  const biggest = schema.databases.filter((d) => d.name !== "system").sort((a, b) => rows(b) - rows(a))[0];
  dbSelect.value = keep || (biggest ? biggest.name : "");
  editor.setSchema(completionNamespace(schema), dbSelect.value);
});
dbSelect.addEventListener("change", () => {
  saveJson(DB_KEY, dbSelect.value);
  editor.setSchema(completionNamespace(schemaStore.get()), dbSelect.value);
});

// ---- login -------------------------------------------------------------------
initLogin();
const logout = $("#logout");
const syncLogout = (has) => {
  logout.title = has ? "Forget the API token" : "No token stored";
};
onTokenChange(syncLogout);
syncLogout(!!getToken());

// ---- start -----------------------------------------------------------------
showView(location.hash.slice(1) || "sql");
// The first call tells whether a token is needed (a 401 opens the login dialog).
apiJson("/api/v1/status")
  .then(updateServerInfo)
  .catch(() => {})
  .finally(() => schemaStore.load().catch((e) => console.warn("schema:", e.message)));

window.sluiceConsole = {
  editor,
  run: () => sqlView.run(),
  timings: sqlView.timings,
  setQuery,
  setDb: (name) => sqlView.selectDb(name),
  showView,
};
