// Every call to the server goes through here: the token header, the login
// dialog on 401 (then the call is retried), and error decoding.

import { $ } from "./dom.js";

const TOKEN_KEY = "sluice.token";
// The id of the token sign-in made, the one sign-out may revoke.
const SIGNIN_KEY = "sluice.signin";
let loginWaiters = null; // pending {promise, resolve} while the dialog is open
const listeners = new Set();

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function setToken(t) {
  try {
    if (t) localStorage.setItem(TOKEN_KEY, t);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Without storage the token lives for this page only.
  }
  memoryToken = t;
  for (const fn of listeners) fn(!!t);
}
let memoryToken = getToken();

/** Called with true/false when a token is set or cleared. */
export function onTokenChange(fn) {
  listeners.add(fn);
}

/** An error from the server: message, HTTP status, SQLSTATE, position, full body. */
export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body || {};
    this.sqlstate = this.body.sqlstate || null;
    this.position = this.body.position || null;
  }
}

/** Opens the login dialog; resolves once a token was entered. */
function askForToken(rejected) {
  if (!loginWaiters) {
    let resolve;
    const promise = new Promise((r) => (resolve = r));
    loginWaiters = { promise, resolve };
    const dlg = $("#login");
    $("#login-message").textContent = rejected
      ? "That was refused. Sign in again."
      : "This server asks who you are: a user name and password, or an API token alone.";
    $("#token-input").value = "";
    if (typeof dlg.showModal === "function" && !dlg.open) dlg.showModal();
    else dlg.setAttribute("open", "");
    setTimeout(() => ($("#user-input").value ? $("#token-input") : $("#user-input")).focus(), 0);
  }
  return loginWaiters.promise;
}

/** How long a token made for the console at sign-in lives, in seconds. */
const SESSION_SECS = 12 * 3600;

/**
 * Trades a user name and password for a token of the console's own, so the
 * password is sent once and never stored. Resolves to the token, or throws
 * with what the server said.
 */
async function signIn(user, password) {
  const res = await fetch("/api/v1/tokens", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: "Basic " + btoa(unescape(encodeURIComponent(user + ":" + password))),
    },
    body: JSON.stringify({ description: "console sign-in", expires_in_secs: SESSION_SECS }),
  });
  const body = await res.json().catch(() => ({}));
  if (res.status !== 201 || !body.token) throw new Error(body.error || `HTTP ${res.status}`);
  try {
    localStorage.setItem(SIGNIN_KEY, body.id);
  } catch {
    // Without storage, sign-out forgets the token without revoking it.
  }
  return body.token;
}

/** The id of a token Sluice made (`sl_<id>_<secret>`), to revoke it at sign-out. */
export function tokenId(t) {
  const m = /^sl_([0-9a-f]{16})_[0-9a-f]{64}$/.exec(t || "");
  return m ? m[1] : null;
}

/** Wires the login dialog and the logout button. */
export function initLogin() {
  const dlg = $("#login");
  const submit = async (e) => {
    e.preventDefault();
    const user = $("#user-input").value.trim();
    let t = $("#token-input").value;
    if (!user) t = t.trim();
    if (!t) return;
    if (!user) {
      try {
        localStorage.removeItem(SIGNIN_KEY);
      } catch {
        // nothing stored, nothing to forget
      }
    }
    if (user) {
      try {
        t = await signIn(user, t);
      } catch (err) {
        $("#login-message").textContent = "Sign-in refused: " + err.message;
        $("#token-input").value = "";
        return;
      }
    }
    setToken(t);
    if (dlg.open && typeof dlg.close === "function") dlg.close();
    dlg.removeAttribute("open");
    const w = loginWaiters;
    loginWaiters = null;
    if (w) w.resolve(t);
  };
  $("#login-form").addEventListener("submit", submit);
  // The dialog stays until a token is given: there is nothing to show without one.
  dlg.addEventListener("cancel", (e) => e.preventDefault());
  $("#logout").addEventListener("click", () => {
    const t = memoryToken;
    const id = tokenId(t);
    let minted = null;
    try {
      minted = localStorage.getItem(SIGNIN_KEY);
      localStorage.removeItem(SIGNIN_KEY);
    } catch {
      // no storage: nothing was minted here
    }
    // The token sign-in made is revoked, not just forgotten; a token the
    // user pasted is theirs to keep.
    if (id && t && id === minted) {
      fetch("/api/v1/tokens/" + id, { method: "DELETE", headers: { Authorization: "Token " + t } }).catch(() => {});
    }
    setToken("");
    // Ask the server whether it wants a token; a 401 opens the dialog.
    api("/api/v1/status").catch(() => {});
  });
}

/**
 * fetch() with the token. On 401 the login dialog is shown and the request
 * is sent again with the new token. Non-2xx answers throw ApiError with the
 * server's message. Returns the Response.
 */
export async function api(path, opts = {}) {
  for (;;) {
    const token = memoryToken;
    const headers = new Headers(opts.headers || {});
    if (token) headers.set("Authorization", "Token " + token);
    let res;
    try {
      res = await fetch(path, { ...opts, headers });
    } catch (e) {
      throw new ApiError("cannot reach the server: " + e.message, 0, null);
    }
    if (res.status === 401) {
      // A token sent and refused is dropped and reported as such.
      if (token && memoryToken === token) setToken("");
      else if (memoryToken && memoryToken !== token) continue; // a newer token exists: try it
      await askForToken(!!token);
      continue;
    }
    if (!res.ok) {
      let body = null;
      const text = await res.text().catch(() => "");
      try {
        body = JSON.parse(text);
      } catch {
        body = { error: text.trim() || res.statusText };
      }
      throw new ApiError(body.error || `HTTP ${res.status}`, res.status, body);
    }
    return res;
  }
}

/** GET/POST returning parsed JSON. */
export async function apiJson(path, opts) {
  const res = await api(path, opts);
  return res.json();
}

/** Sends SQL and resolves to the raw Response (any format: json, csv, …). */
export function sqlResponse(sql, db, format = "json", signal) {
  const body = { sql, format };
  if (db) body.db = db;
  return api("/api/v1/sql", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
}

/**
 * JSON.parse that keeps integers beyond ±2^53 exact: such a number comes back
 * as its source text (a string), everything else as JSON.parse gives it. Needs
 * the reviver's source-text context (Chromium 114+); without it the numbers
 * are rounded as before. Texts with no run of 16 digits skip the reviver.
 */
export function parseJsonLossless(text) {
  // Only a bare integer token of 16+ digits can lose precision; most
  // results have none and skip the (slower) reviver.
  if (!/[[,:]-?\d{16,}[,\]}]/.test(text)) return JSON.parse(text);
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
      ? context.source
      : value,
  );
}

/** Runs SQL; resolves to {columns, rows, error?}. */
export async function runSql(sql, db, signal) {
  const res = await sqlResponse(sql, db, "json", signal);
  const text = await res.text();
  let doc;
  try {
    doc = parseJsonLossless(text);
  } catch {
    // A stream cut short: report what is known.
    throw new ApiError("the server sent an incomplete result", res.status, { error: "incomplete JSON result" });
  }
  return { columns: doc.columns || [], rows: doc.rows || [], error: doc.error || null };
}
