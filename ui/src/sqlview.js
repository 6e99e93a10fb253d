// The SQL view: run queries, show the grid and chart, errors with their
// position, time-range presets, auto-refresh, history, saved queries and
// downloads.

import { $, h, setChildren, loadJson, saveJson, poller, downloadBlob } from "./dom.js";
import { runSql, sqlResponse } from "./api.js";
import { Grid } from "./grid.js";
import { Chart, toSeries, MAX_SERIES } from "./chart.js";
import { PRESETS, rewriteTimeRange } from "./timerange.js";
import { formatNumber } from "./format.js";

const HISTORY_KEY = "sluice.history";
const SAVED_KEY = "sluice.saved";
const MODE_KEY = "sluice.resultMode";
const HISTORY_MAX = 100;

/** Finds an error position in the message when the JSON carries none. */
export function positionFromMessage(msg) {
  const m = /Line:\s*(\d+),\s*Column:?\s*(\d+)/i.exec(msg || "");
  return m ? { line: +m[1], column: +m[2] } : null;
}

export function initSqlView({ editor, getDb }) {
  const grid = new Grid($("#grid"));
  const chart = new Chart($("#chart"));
  const status = $("#result-status");
  const errorBox = $("#error");
  let inFlight = null;
  let lastResult = null;
  // Where the last run's time went, for benches/console.sh.
  const timings = {};
  let mode = loadJson(MODE_KEY, "both");
  let lastRun = null; // what auto-refresh repeats: {text, db, base}

  // ---- running -------------------------------------------------------------
  async function run({ fromRefresh = false } = {}) {
    // A refresh repeats the last query run, not what is being typed meanwhile;
    // before the first run there is nothing to repeat.
    if (fromRefresh && !lastRun) return;
    const sel = fromRefresh ? null : editor.getSelection();
    const again = fromRefresh && lastRun;
    const text = again ? lastRun.text : sel ? sel.text : editor.getText();
    const base = again ? lastRun.base : sel ? sel.from : 0;
    if (!text.trim()) {
      status.textContent = "Nothing to run";
      return;
    }
    if (fromRefresh && inFlight) return; // never pile up refreshes
    if (inFlight) inFlight.abort();
    const ctl = new AbortController();
    inFlight = ctl;
    const db = again ? lastRun.db : getDb();
    if (!fromRefresh) {
      editor.clearError();
      addHistory(text, db);
      lastRun = { text, db, base };
    }
    status.textContent = "Running…";
    status.classList.add("running");
    $("#run").disabled = true;
    const t0 = performance.now();
    try {
      const res = await runSql(text, db, ctl.signal);
      if (ctl.signal.aborted) return;
      const ms = performance.now() - t0;
      lastResult = res;
      // A refresh shows the same query again: keep the grid's sort and scroll.
      showResult(res, ms, !!again);
      timings.total_ms = performance.now() - t0;
      if (res.error) showError({ message: res.error, sqlstate: null, position: null, midStream: true }, base);
      else hideError();
    } catch (e) {
      if (e.name === "AbortError" || ctl.signal.aborted) return;
      const ms = performance.now() - t0;
      status.textContent = `Error · ${formatNumber(ms)} ms`;
      // An old result under a new error misleads; clear it.
      lastResult = null;
      grid.clear("No result: the query failed.");
      chart.destroy();
      $("#chart-note").textContent = "";
      showError({ message: e.message, sqlstate: e.sqlstate, position: e.position }, base);
    } finally {
      if (inFlight === ctl) inFlight = null;
      status.classList.remove("running");
      $("#run").disabled = false;
    }
  }

  function showResult(res, ms, keep = false) {
    const n = res.rows.length;
    status.textContent = `${n} ${n === 1 ? "row" : "rows"} · ${formatNumber(ms)} ms` +
      (res.columns.length ? ` · ${res.columns.length} columns` : "");
    timings.fetch_ms = ms;
    let t = performance.now();
    grid.setData(res.columns, res.rows, { keep });
    timings.grid_ms = performance.now() - t;
    t = performance.now();
    drawChart(res);
    timings.chart_ms = performance.now() - t;
  }

  function drawChart(res) {
    const note = $("#chart-note");
    if (mode === "grid") return;
    const series = res ? toSeries(res.columns, res.rows) : null;
    if (!series) {
      chart.destroy();
      note.textContent = res && res.columns.length ? "No chart: the result needs a time column and a numeric column." : "";
      return;
    }
    note.textContent =
      `${series.names.length} series` + (series.truncated ? ` (first ${MAX_SERIES} shown)` : "") + " · times in UTC · drag to zoom, double-click to reset";
    chart.draw(series);
  }

  function showError({ message, sqlstate, position, midStream }, base) {
    const pos = position && position.line ? position : positionFromMessage(message);
    errorBox.hidden = false;
    if (sqlstate) errorBox.setAttribute("data-sqlstate", sqlstate);
    else errorBox.removeAttribute("data-sqlstate");
    setChildren(
      errorBox,
      h("strong", null, midStream ? "Query failed part-way: " : "Error: "),
      h("span", { class: "error-message" }, message),
      sqlstate ? h("span", { class: "sqlstate" }, ` SQLSTATE ${sqlstate}`) : null,
      pos ? h("span", { class: "error-pos" }, ` at line ${pos.line}, column ${pos.column}`) : null,
    );
    if (pos) editor.markError(pos.line, pos.column, message, base);
  }

  function hideError() {
    errorBox.hidden = true;
    errorBox.removeAttribute("data-sqlstate");
    errorBox.replaceChildren();
  }

  $("#run").addEventListener("click", () => run());
  // Ctrl/Cmd+Enter also runs while the focus is elsewhere in the SQL view.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey) || $("#view-sql").hidden) return;
    if (e.target.closest && e.target.closest("#editor, textarea, dialog")) return;
    e.preventDefault();
    run();
  });

  // ---- result display mode --------------------------------------------------
  function setMode(m) {
    mode = m;
    saveJson(MODE_KEY, m);
    for (const b of document.querySelectorAll("[data-mode]")) b.classList.toggle("active", b.dataset.mode === m);
    $("#grid").hidden = m === "chart";
    $("#chart-panel").hidden = m === "grid";
    $("#view-sql").dataset.mode = m;
    if (m !== "grid" && lastResult) drawChart(lastResult);
    else if (m === "grid") chart.destroy();
  }
  for (const b of document.querySelectorAll("[data-mode]")) b.addEventListener("click", () => setMode(b.dataset.mode));
  setMode(mode);

  // ---- time range presets and refresh --------------------------------------
  for (const b of document.querySelectorAll("[data-range]")) {
    b.addEventListener("click", () => {
      const interval = PRESETS[b.dataset.range];
      const { sql, changed } = rewriteTimeRange(editor.getText(), interval);
      if (!changed) {
        $("#chart-note").textContent = "No FROM clause to put a time range on.";
        return;
      }
      for (const o of document.querySelectorAll("[data-range]")) o.classList.toggle("active", o === b);
      editor.setText(sql);
      run();
    });
  }
  let refresher = null;
  $("#refresh-select").addEventListener("change", (e) => {
    if (refresher) refresher.stop();
    refresher = null;
    const every = +e.target.value || 0;
    if (every > 0) {
      // Never more often than once a second; paused while the tab or view is hidden.
      refresher = poller(() => run({ fromRefresh: true }), Math.max(1000, every), () => !$("#view-sql").hidden);
      refresher.start(false);
    }
  });

  // ---- history and saved queries ------------------------------------------
  let history = loadJson(HISTORY_KEY, []);
  let saved = loadJson(SAVED_KEY, []);

  function addHistory(sql, db) {
    if (history.length && history[0].sql === sql && history[0].db === db) {
      history[0].at = Date.now();
    } else {
      history.unshift({ sql, db, at: Date.now() });
      history = history.slice(0, HISTORY_MAX);
    }
    saveJson(HISTORY_KEY, history);
    renderHistory();
  }

  function load(entry) {
    editor.setText(entry.sql);
    if (entry.db !== undefined) selectDb(entry.db);
    editor.focus();
  }

  function selectDb(db) {
    const sel = $("#db-select");
    if (db && ![...sel.options].some((o) => o.value === db)) sel.append(h("option", { value: db }, db));
    sel.value = db || "";
    sel.dispatchEvent(new Event("change"));
  }

  function renderHistory() {
    setChildren(
      $("#history"),
      history.map((e) =>
        h(
          "li",
          { title: e.sql, onclick: () => load(e) },
          h("code", null, e.sql.length > 240 ? e.sql.slice(0, 240) + "…" : e.sql),
          h("span", { class: "meta" }, (e.db ? e.db + " · " : "") + new Date(e.at).toLocaleString()),
        ),
      ),
    );
  }

  function renderSaved() {
    setChildren(
      $("#saved"),
      saved.map((e, i) =>
        h(
          "li",
          { title: e.sql, onclick: () => load(e) },
          h("div", { class: "saved-head" }, h("strong", null, e.name),
            h("button", {
              type: "button", class: "ghost small", title: "Delete", "aria-label": `Delete ${e.name}`,
              onclick: (ev) => {
                ev.stopPropagation();
                saved.splice(i, 1);
                saveJson(SAVED_KEY, saved);
                renderSaved();
              },
            }, "×")),
          h("code", null, e.sql.length > 160 ? e.sql.slice(0, 160) + "…" : e.sql),
        ),
      ),
    );
  }

  $("#save-query").addEventListener("click", () => {
    const nameInput = $("#save-name");
    const name = nameInput.value.trim() || `query ${saved.length + 1}`;
    const sql = editor.getText();
    if (!sql.trim()) return;
    const entry = { name, sql, db: getDb() };
    const at = saved.findIndex((s) => s.name === name);
    if (at >= 0) saved[at] = entry;
    else saved.unshift(entry);
    saveJson(SAVED_KEY, saved);
    nameInput.value = "";
    renderSaved();
    showSide("saved");
  });

  function showSide(which) {
    for (const b of document.querySelectorAll("[data-side]")) b.classList.toggle("active", b.dataset.side === which);
    $("#history").hidden = which !== "history";
    $("#saved").hidden = which !== "saved";
    $("#history-clear").hidden = which !== "history";
  }
  for (const b of document.querySelectorAll("[data-side]")) b.addEventListener("click", () => showSide(b.dataset.side));
  $("#history-clear").addEventListener("click", () => {
    history = [];
    saveJson(HISTORY_KEY, history);
    renderHistory();
  });
  renderHistory();
  renderSaved();

  // ---- downloads -------------------------------------------------------------
  async function download(format) {
    const sel = editor.getSelection();
    const text = sel ? sel.text : editor.getText();
    if (!text.trim()) return;
    const prev = status.textContent;
    status.textContent = `Downloading ${format.toUpperCase()}…`;
    try {
      const res = await sqlResponse(text, getDb(), format);
      const blob = await res.blob();
      downloadBlob(blob, `result.${format}`);
      status.textContent = prev;
    } catch (e) {
      status.textContent = prev;
      showError({ message: e.message, sqlstate: e.sqlstate, position: e.position }, sel ? sel.from : 0);
    }
  }
  $("#download-csv").addEventListener("click", () => download("csv"));
  $("#download-json").addEventListener("click", () => download("json"));

  return {
    run,
    grid,
    chart,
    retheme: () => chart.retheme(),
    selectDb,
    timings,
  };
}
