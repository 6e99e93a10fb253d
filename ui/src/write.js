// The write view: line protocol pasted into a textarea, or a CSV file turned
// into line protocol in the browser and sent in batches; per-line errors from
// the server are shown against the text line or the CSV line they came from.

import { $, h, setChildren } from "./dom.js";
import { api, ApiError } from "./api.js";
import { formatNumber } from "./format.js";
import { parseCsv, inferType, FIELD_TYPES, guessTimeColumn, guessTimeFormat, makeConverter, toBatches } from "./csv.js";

const BATCH_LINES = 5000;
const MAX_SHOWN_ERRORS = 200;

/**
 * POST /write; resolves to {written, rejected: [{line, reason}], truncated}
 * or throws ApiError. A 503 (the server sheds load) is retried a few times,
 * a second apart, as its Retry-After asks.
 */
async function postWrite(db, precision, body, onRetry = () => {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      await api(`/write?db=${encodeURIComponent(db)}&precision=${encodeURIComponent(precision)}`, {
        method: "POST",
        headers: { "Content-Type": "text/plain; charset=utf-8" },
        body,
      });
      return { written: null, rejected: [], truncated: false };
    } catch (e) {
      if (e instanceof ApiError && e.status === 400 && Array.isArray(e.body.rejected)) {
        return {
          written: +e.body.lines_written || 0,
          rejected: e.body.rejected,
          truncated: !!e.body.rejected_truncated,
          total: +e.body.lines_rejected || e.body.rejected.length,
          message: e.body.error,
        };
      }
      if (e instanceof ApiError && e.status === 503 && attempt < 10) {
        onRetry(attempt + 1, e.message);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      throw e;
    }
  }
}

/** Physical lines that carry a point (not blank, not a comment), as the server counts them. */
function countLines(text) {
  let n = 0;
  for (const l of text.split("\n")) if (l.trim() && !l.trimStart().startsWith("#")) n++;
  return n;
}

/** Strings default to tags unless they look like free text (spaces, long values). */
function tagLike(records, i) {
  for (let r = 0; r < Math.min(records.length, 1000); r++) {
    const v = records[r].values[i] ?? "";
    if (v.length > 64 || /\s/.test(v.trim())) return false;
  }
  return true;
}

export function initWriteView({ getDb, onWritten }) {
  const result = $("#write-result");
  const input = $("#lp-input");
  const dbInput = $("#lp-db");

  function show(kind, ...children) {
    result.className = "write-result " + kind;
    setChildren(result, ...children);
  }

  function errorList(errors, label) {
    const shown = errors.slice(0, MAX_SHOWN_ERRORS);
    return h(
      "ul",
      { class: "line-errors" },
      shown.map((e) => h("li", { class: "line-error", dataset: { line: String(e.line) } }, h("strong", null, `${label} ${e.line}: `), e.reason,
        e.text ? h("code", { class: "line-text" }, e.text.length > 200 ? e.text.slice(0, 200) + "…" : e.text) : null)),
      errors.length > shown.length ? h("li", { class: "muted" }, `… and ${formatNumber(errors.length - shown.length)} more`) : null,
    );
  }

  function database() {
    const db = dbInput.value.trim();
    if (!db) {
      show("error", "Enter a database name.");
      dbInput.focus();
      return null;
    }
    return db;
  }

  // Pre-fill the database from the SQL view's selection.
  const syncDb = () => {
    if (!dbInput.value.trim() && getDb()) dbInput.value = getDb();
  };

  input.addEventListener("input", () => {
    $("#lp-count").textContent = input.value.trim() ? `${formatNumber(countLines(input.value))} lines` : "";
  });

  $("#lp-submit").addEventListener("click", async () => {
    const db = database();
    if (!db) return;
    const body = input.value;
    if (!body.trim()) {
      show("error", "Nothing to write: paste line protocol above.");
      return;
    }
    const lines = countLines(body);
    $("#lp-submit").disabled = true;
    show("pending", "Writing…");
    try {
      const r = await postWrite(db, $("#lp-precision").value, body);
      if (!r.rejected.length) {
        show("ok", `${formatNumber(lines)} ${lines === 1 ? "line" : "lines"} written to ${db}.`);
      } else {
        const text = body.split("\n");
        const errs = r.rejected.map((e) => ({ ...e, text: text[e.line - 1] }));
        show("partial", h("p", null, `${formatNumber(r.written)} lines written, ${formatNumber(r.total)} rejected` + (r.truncated ? " (only the first errors are listed)" : "") + "."), errorList(errs, "line"));
      }
      onWritten();
    } catch (e) {
      show("error", `Write failed (${e.status || "network"}): ${e.message}`);
    } finally {
      $("#lp-submit").disabled = false;
    }
  });

  // ---- CSV -------------------------------------------------------------------
  let csv = null; // {name, header, records, columns}

  async function loadFile(file) {
    if (!file) return;
    show("pending", `Reading ${file.name}…`);
    const text = await file.text();
    const { header, records } = parseCsv(text);
    if (!header.length) {
      show("error", `${file.name}: no header row found.`);
      return;
    }
    const timeIdx = guessTimeColumn(header);
    const columns = header.map((name, i) => {
      const type = inferType(records, i);
      return { name, type, role: i === timeIdx ? "time" : type === "string" && tagLike(records, i) ? "tag" : "field" };
    });
    csv = { name: file.name, header, records, columns };
    $("#csv-measurement").value = file.name.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_") || "imported";
    const timeSel = $("#csv-time");
    setChildren(timeSel, h("option", { value: "-1" }, "(none: server time)"), header.map((n, i) => h("option", { value: String(i) }, n)));
    timeSel.value = String(timeIdx);
    if (timeIdx >= 0) $("#csv-time-format").value = guessTimeFormat(records[0] && records[0].values[timeIdx]);
    $("#csv-setup").hidden = false;
    $("#csv-info").textContent = `${file.name}: ${formatNumber(records.length)} rows, ${header.length} columns`;
    renderColumns();
    renderPreview();
    show("", "");
    syncDb();
  }

  function renderColumns() {
    setChildren(
      $("#csv-columns tbody"),
      csv.columns.map((c, i) => {
        const role = h("select", { class: "csv-role", dataset: { column: c.name }, "aria-label": `Role of ${c.name}` },
          ["tag", "field", "time", "ignore"].map((r) => h("option", { value: r, selected: c.role === r }, r)));
        role.value = c.role;
        role.addEventListener("change", () => {
          c.role = role.value;
          if (c.role === "time") {
            csv.columns.forEach((o, j) => { if (j !== i && o.role === "time") o.role = o.type === "string" ? "tag" : "field"; });
            $("#csv-time").value = String(i);
          } else if ($("#csv-time").value === String(i)) {
            $("#csv-time").value = "-1";
          }
          renderColumns();
          renderPreview();
        });
        const sample = csv.records.length ? csv.records[0].values[i] ?? "" : "";
        // A field's type is a guess from the values; it can be set to match an existing field.
        let type = c.role === "time" ? "time" : c.role === "tag" ? "tag (string)" : c.type;
        if (c.role === "field") {
          type = h("select", { class: "csv-type", dataset: { column: c.name }, "aria-label": `Type of ${c.name}` },
            FIELD_TYPES.map((t) => h("option", { value: t }, t)));
          type.value = c.type;
          type.addEventListener("change", () => {
            c.type = type.value;
            renderPreview();
          });
        }
        return h("tr", null, h("td", null, c.name), h("td", null, role), h("td", null, type), h("td", { class: "muted" }, sample));
      }),
    );
  }

  function converter() {
    return makeConverter({
      header: csv.header,
      columns: csv.columns,
      measurement: $("#csv-measurement").value.trim() || "imported",
      timeFormat: $("#csv-time-format").value,
    });
  }

  function renderPreview() {
    const { convert } = converter();
    const lines = csv.records.slice(0, 10).map((r) => {
      const res = convert(r.values);
      return res.error ? `# CSV line ${r.line}: ${res.error}` : res.line;
    });
    $("#csv-preview").textContent = lines.join("\n") + (csv.records.length > 10 ? `\n# … ${formatNumber(csv.records.length - 10)} more rows` : "");
  }

  $("#csv-time").addEventListener("change", (e) => {
    const idx = +e.target.value;
    csv.columns.forEach((c, i) => {
      if (i === idx) c.role = "time";
      else if (c.role === "time") c.role = c.type === "string" ? "tag" : "field";
    });
    if (idx >= 0) $("#csv-time-format").value = guessTimeFormat(csv.records[0] && csv.records[0].values[idx]);
    renderColumns();
    renderPreview();
  });
  $("#csv-time-format").addEventListener("change", renderPreview);
  $("#csv-measurement").addEventListener("input", renderPreview);
  $("#csv-file").addEventListener("change", (e) => loadFile(e.target.files[0]));
  const drop = $("#csv-drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    loadFile(e.dataTransfer.files[0]);
  });

  $("#csv-submit").addEventListener("click", async () => {
    if (!csv) return;
    const db = database();
    if (!db) return;
    const { convert, precision } = converter();
    const { batches, errors } = toBatches(csv.records, convert, BATCH_LINES);
    const rejected = errors.map((e) => ({ line: e.csvLine, reason: e.reason }));
    let written = 0;
    let truncated = false;
    const progress = $("#csv-progress");
    $("#csv-submit").disabled = true;
    try {
      for (let b = 0; b < batches.length; b++) {
        progress.textContent = `batch ${b + 1} of ${batches.length}…`;
        const batch = batches[b];
        const r = await postWrite(db, precision, batch.body, (n, why) => {
          progress.textContent = `batch ${b + 1} of ${batches.length}: server busy (${why}), retry ${n}…`;
        });
        if (!r.rejected.length) {
          written += batch.count;
        } else {
          written += r.written;
          truncated ||= r.truncated;
          for (const e of r.rejected) rejected.push({ line: batch.lineMap[e.line - 1] ?? `?(batch ${b + 1} line ${e.line})`, reason: e.reason });
        }
      }
      progress.textContent = "";
      rejected.sort((a, b) => (+a.line || 0) - (+b.line || 0));
      const summary = `${formatNumber(written)} rows written to ${db}.` +
        (rejected.length ? ` ${formatNumber(rejected.length)} rejected${truncated ? " (the server listed only the first errors of a batch)" : ""}:` : "");
      show(rejected.length ? "partial" : "ok", h("p", null, summary), rejected.length ? errorList(rejected, "CSV line") : null);
      onWritten();
    } catch (e) {
      progress.textContent = "";
      show("error", h("p", null, `Import stopped (${e.status || "network"}): ${e.message}. ${formatNumber(written)} rows were written before.`));
    } finally {
      $("#csv-submit").disabled = false;
    }
  });

  return { syncDb };
}
