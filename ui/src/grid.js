// Result grid with virtual scrolling: rows have a fixed height, the body is a
// spacer of rows × height, and only the rows in view (plus a margin) exist in
// the DOM, recycled as the user scrolls. Clicking a header sorts the rows in
// the browser (ascending, descending, off).

import { h } from "./dom.js";
import { isNumericType } from "./format.js";

const ROW_H = 24;
const OVERSCAN = 8;
const CHAR_PX = 7.8; // monospace 13px
const MIN_W = 64;
const MAX_W = 420;

function cellText(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// What a cell sorts by: numbers as numbers, integers the server sent as text
// (beyond ±2^53) as BigInt, which compares exactly with Numbers too.
function sortKey(v, numeric) {
  if (v === null || v === undefined) return null;
  if (!numeric) return String(v);
  if (typeof v === "number") return v;
  if (typeof v === "string" && /^-?\d+$/.test(v)) return BigInt(v);
  return +v;
}

/** Row indexes of `rows` sorted on column `col` (dir 1 or -1), NULLs last, stable. */
export function sortOrder(rows, col, dir, numeric) {
  const keys = rows.map((r) => sortKey(r[col], numeric));
  const idx = Array.from(rows.keys());
  idx.sort((a, b) => {
    const x = keys[a];
    const y = keys[b];
    if (x === null) return y === null ? a - b : 1; // NULLs last either way
    if (y === null) return -1;
    const c = x < y ? -1 : x > y ? 1 : 0;
    return c * dir || a - b;
  });
  return idx;
}

export class Grid {
  constructor(root) {
    this.root = root;
    this.columns = [];
    this.rows = [];
    this.order = null; // row indexes when sorted
    this.sort = null; // {col, dir}
    this.pool = [];
    this.frame = 0;
    this.header = h("div", { class: "grid-header", role: "row" });
    this.body = h("div", { class: "grid-body", role: "rowgroup" });
    this.inner = h("div", { class: "grid-inner", role: "table" }, this.header, this.body);
    this.empty = h("div", { class: "grid-empty muted" }, "Run a query: Ctrl+Enter (⌘+Enter) or the Run button.");
    root.replaceChildren(this.inner, this.empty);
    root.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(root);
    // Full text of a clipped cell on hover, set lazily.
    root.addEventListener("mouseover", (e) => {
      const c = e.target.closest(".cell");
      if (c && c.scrollWidth > c.clientWidth) c.title = c.textContent;
    });
  }

  /**
   * Shows a result: columns [{name, type}], rows [[...]]. With `keep` (a
   * refresh of the same query) the sort, by column name, and the scroll
   * position stay.
   */
  setData(columns, rows, { keep = false } = {}) {
    const old = keep && this.sort ? { ...this.sort, name: this.columns[this.sort.col].name } : null;
    const { scrollTop, scrollLeft } = this.root;
    this.columns = columns;
    this.rows = rows;
    this.order = null;
    this.sort = null;
    this.numeric = columns.map((c) => isNumericType(c.type));
    if (old) {
      const col = columns[old.col] && columns[old.col].name === old.name ? old.col : columns.findIndex((c) => c.name === old.name);
      if (col >= 0) {
        this.sort = { col, dir: old.dir };
        this.order = sortOrder(rows, col, old.dir, this.numeric[col]);
      }
    }
    this.widths = this.measure();
    const digits = String(rows.length).length;
    this.numW = Math.max(40, digits * CHAR_PX + 16);
    this.template = `${this.numW}px ` + this.widths.map((w) => w + "px").join(" ");
    const total = this.numW + this.widths.reduce((a, b) => a + b, 0);
    this.inner.style.width = total + "px";
    this.renderHeader();
    this.empty.hidden = rows.length > 0;
    this.empty.textContent = columns.length ? "No rows." : this.emptyText;
    this.body.style.height = rows.length * ROW_H + "px";
    for (const r of this.pool) r.el.remove();
    this.pool = [];
    this.root.scrollTop = keep ? scrollTop : 0;
    this.root.scrollLeft = keep ? scrollLeft : 0;
    this.render();
  }

  /** Empties the grid; `text` is shown in its place. */
  clear(text = "Run a query: Ctrl+Enter (⌘+Enter) or the Run button.") {
    this.emptyText = text;
    this.setData([], []);
  }

  measure() {
    const sample = Math.min(this.rows.length, 500);
    return this.columns.map((c, i) => {
      let len = Math.max(c.name.length, (c.type || "").length * 0.85) + 2;
      for (let r = 0; r < sample; r++) {
        const t = cellText(this.rows[r][i]);
        const l = t === null ? 4 : t.length;
        if (l > len) len = l;
      }
      return Math.round(Math.min(MAX_W, Math.max(MIN_W, len * CHAR_PX + 18)));
    });
  }

  renderHeader() {
    const cells = this.columns.map((c, i) => {
      const arrow = this.sort && this.sort.col === i ? (this.sort.dir > 0 ? " ▲" : " ▼") : "";
      return h(
        "div",
        {
          class: "cell" + (this.numeric[i] ? " num" : ""),
          role: "columnheader",
          title: `${c.name} (${c.type}) — click to sort`,
          onclick: () => this.toggleSort(i),
        },
        h("span", { class: "col-name" }, c.name + arrow),
        h("span", { class: "col-type" }, c.type),
      );
    });
    this.header.style.gridTemplateColumns = this.template;
    this.header.replaceChildren(h("div", { class: "rownum" }, "#"), ...cells);
  }

  toggleSort(col) {
    let dir = 1;
    if (this.sort && this.sort.col === col) dir = this.sort.dir > 0 ? -1 : 0;
    if (dir === 0) {
      this.sort = null;
      this.order = null;
    } else {
      this.sort = { col, dir };
      this.order = sortOrder(this.rows, col, dir, this.numeric[col]);
    }
    this.renderHeader();
    for (const r of this.pool) r.idx = -1;
    this.render();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    const n = this.rows.length;
    const headerH = this.header.offsetHeight;
    const top = Math.max(0, this.root.scrollTop - headerH);
    const viewH = this.root.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + viewH) / ROW_H) + OVERSCAN);
    const need = Math.max(0, last - first);
    while (this.pool.length < need) this.pool.push(this.makeRow());
    while (this.pool.length > need) this.pool.pop().el.remove();
    // Keep rows that already show an index in range; reassign the others.
    const byIdx = new Map();
    const free = [];
    for (const r of this.pool) {
      if (r.idx >= first && r.idx < last && !byIdx.has(r.idx)) byIdx.set(r.idx, r);
      else free.push(r);
    }
    for (let i = first; i < last; i++) {
      let r = byIdx.get(i);
      if (!r) {
        r = free.pop();
        this.fill(r, i);
      }
    }
  }

  makeRow() {
    const cells = this.columns.map((_, i) => h("div", { class: "cell" + (this.numeric[i] ? " num" : ""), role: "cell" }));
    const num = h("div", { class: "rownum" });
    const el = h("div", { class: "grid-row", role: "row" }, num, ...cells);
    el.style.gridTemplateColumns = this.template;
    this.body.append(el);
    return { el, num, cells, idx: -1 };
  }

  fill(r, i) {
    r.idx = i;
    r.el.style.top = i * ROW_H + "px";
    r.el.classList.toggle("odd", i % 2 === 1);
    r.num.textContent = i + 1;
    const row = this.rows[this.order ? this.order[i] : i];
    for (let c = 0; c < r.cells.length; c++) {
      const t = cellText(row[c]);
      const cell = r.cells[c];
      if (t === null) {
        cell.textContent = "NULL";
        cell.classList.add("null");
      } else {
        cell.textContent = t;
        cell.classList.remove("null");
      }
      if (cell.title) cell.title = "";
    }
  }
}
