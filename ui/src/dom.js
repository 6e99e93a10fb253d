// Small DOM helpers shared by the views.

/**
 * Creates an element: h("div", {class: "x", onclick: fn}, child, "text").
 * Attributes starting with "on" become listeners; `dataset` and `style`
 * objects are merged; null/false attributes are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
      else if (k === "class") el.className = v;
      else if (k in el && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Replaces an element's children. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Reads JSON from localStorage, `fallback` when absent or broken. */
export function loadJson(key, fallback) {
  try {
    const s = localStorage.getItem(key);
    return s == null ? fallback : JSON.parse(s);
  } catch {
    return fallback;
  }
}

export function saveJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: history is a convenience, not data.
  }
}

/** Runs `fn` every `ms` while `active()` holds and the tab is visible. */
export function poller(fn, ms, active = () => true) {
  let timer = null;
  let busy = false;
  const tick = async () => {
    if (busy || document.hidden || !active()) return;
    busy = true;
    try {
      await fn();
    } finally {
      busy = false;
    }
  };
  return {
    start(immediate = true) {
      this.stop();
      timer = setInterval(tick, ms);
      if (immediate) tick();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = null;
    },
    get running() {
      return timer !== null;
    },
    tick,
  };
}

/** Saves a Blob as a download with the given file name. */
export function downloadBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
