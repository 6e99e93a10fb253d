// Time-series chart of a query result with uPlot: x = the first time column,
// one series per numeric column, split by the distinct values of the string
// (tag) columns. Drag to zoom, double-click to reset, the legend shows the
// values under the cursor.

import uPlot from "uplot";
import { isNumericType, isStringType, isTimeType, parseTimeMs } from "./format.js";

export const MAX_SERIES = 50;

const PALETTE = [
  "#4e9af1", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
  "#9c755f", "#8cd17d", "#a0cbe8", "#ffbe7d", "#86bcb6", "#d37295", "#f1ce63", "#499894",
];

export function seriesColor(i) {
  if (i < PALETTE.length) return PALETTE[i];
  return `hsl(${Math.round((i * 137.508) % 360)}, 62%, 56%)`;
}

/**
 * Turns a result into uPlot input, or null when it has no time column or no
 * numeric column. Returns {data, names, truncated, timeName}.
 */
export function toSeries(columns, rows) {
  const t = columns.findIndex((c) => isTimeType(c.type));
  if (t < 0) return null;
  const nums = [];
  let tags = [];
  columns.forEach((c, i) => {
    if (i === t) return;
    if (isNumericType(c.type)) nums.push(i);
    else if (isStringType(c.type)) tags.push(i);
  });
  if (nums.length === 0) return null;
  // A tag with one value in the whole result splits nothing: keep it out of the names.
  tags = tags.filter((i) => {
    const first = rows.length ? rows[0][i] : null;
    return rows.some((r) => r[i] !== first);
  });

  // Series keys: tag combination × numeric column, in order of appearance.
  const keyIndex = new Map();
  const names = [];
  const rowSeries = new Int32Array(rows.length * nums.length).fill(-1);
  let truncated = false;
  const xsSet = new Map(); // time (s) → slot
  const times = new Float64Array(rows.length);
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    const ms = parseTimeMs(row[t]);
    times[r] = ms / 1000;
    if (!Number.isFinite(ms)) continue;
    let tagKey = "";
    if (tags.length) tagKey = tags.map((i) => `${columns[i].name}=${row[i] ?? ""}`).join(",");
    for (let k = 0; k < nums.length; k++) {
      const key = tagKey + "\u0000" + k;
      let s = keyIndex.get(key);
      if (s === undefined) {
        if (names.length >= MAX_SERIES) {
          truncated = true;
          continue;
        }
        s = names.length;
        keyIndex.set(key, s);
        const col = columns[nums[k]].name;
        names.push(tagKey ? (nums.length > 1 ? `${col} ${tagKey}` : tagKey) : col);
      }
      rowSeries[r * nums.length + k] = s;
    }
    if (!xsSet.has(times[r])) xsSet.set(times[r], 0);
  }
  const xs = Float64Array.from(xsSet.keys()).sort();
  xs.forEach((x, i) => xsSet.set(x, i));
  const ys = names.map(() => new Array(xs.length).fill(null));
  for (let r = 0; r < rows.length; r++) {
    if (!Number.isFinite(times[r])) continue;
    const slot = xsSet.get(times[r]);
    for (let k = 0; k < nums.length; k++) {
      const s = rowSeries[r * nums.length + k];
      if (s < 0) continue;
      const v = rows[r][nums[k]];
      if (v === null || v === undefined) continue;
      const f = typeof v === "number" ? v : parseFloat(v);
      if (Number.isFinite(f)) ys[s][slot] = f;
    }
  }
  return { data: [Array.from(xs), ...ys], names, truncated, timeName: columns[t].name };
}

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

function axis() {
  const stroke = cssVar("--muted", "#888");
  const grid = cssVar("--grid-line", "rgba(128,128,128,0.15)");
  return { stroke, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
}

/** Owns the uPlot instance in a container; redraws on resize and theme change. */
export class Chart {
  constructor(root) {
    this.root = root;
    this.plot = null;
    this.shape = "";
    new ResizeObserver(() => this.resize()).observe(root);
  }

  size() {
    const w = Math.max(200, this.root.clientWidth - 4);
    return { width: w, height: Math.max(160, Math.min(280, Math.round(w * 0.25))) };
  }

  resize() {
    if (this.plot) this.plot.setSize(this.size());
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.shape = "";
    this.root.replaceChildren();
  }

  /** Draws `series` (from toSeries); keeps the instance when only data changed. */
  draw(series) {
    const shape = series.names.join("\u0001");
    if (this.plot && shape === this.shape) {
      this.plot.setData(series.data);
      return;
    }
    this.destroy();
    this.shape = shape;
    const opts = {
      ...this.size(),
      cursor: { drag: { x: true, y: false }, focus: { prox: 16 } },
      focus: { alpha: 0.35 },
      legend: { live: true },
      scales: { x: { time: true } },
      // The grid prints the server's UTC times; the chart's axis agrees.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      axes: [{ ...axis(), space: 70 }, { ...axis(), size: 60 }],
      series: [
        { label: series.timeName },
        ...series.names.map((name, i) => ({
          label: name,
          stroke: seriesColor(i),
          width: 1.5,
          spanGaps: true,
          points: { show: false },
        })),
      ],
    };
    this.plot = new uPlot(opts, series.data, this.root);
  }

  /** Rebuilds with the current theme colours. */
  retheme() {
    if (!this.plot) return;
    const data = this.plot.data;
    const names = this.plot.series.slice(1).map((s) => s.label);
    const timeName = this.plot.series[0].label;
    this.destroy();
    this.draw({ data, names, timeName });
  }
}

/** A small line without axes or legend (ingest rates). */
export function sparkline(root, color) {
  const width = Math.max(120, root.clientWidth || 200);
  const opts = {
    width,
    height: 48,
    legend: { show: false },
    cursor: { show: false },
    select: { show: false },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: color, fill: color + "33", width: 1.5, points: { show: false } }],
  };
  const u = new uPlot(opts, [[], []], root);
  new ResizeObserver(() => {
    if (root.clientWidth) u.setSize({ width: root.clientWidth, height: 48 });
  }).observe(root);
  return u;
}
