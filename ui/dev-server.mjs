#!/usr/bin/env node
// Development server for the console: serves ui/dist under /ui/ (/ redirects
// there) and passes the API through to a Sluice server. When that server
// answers 404 for /api/v1/status or /api/v1/schema (a version without them),
// sample JSON is served instead. With --mock no server is needed at all.
//
//   node dev-server.mjs [--port 8787] [--upstream http://127.0.0.1:8086]
//                       [--mock] [--token SECRET] [--dist DIR]
//
// --token makes the mock demand `Authorization: Token SECRET` (to try the
// login dialog); against a real server its own token setting applies.

import http from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { sampleStatus, sampleSchema, mockQuery, mockWrite, toCsv, SqlError } from "./dev-mock.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf("--" + name);
  return i >= 0 && args[i + 1] && !args[i + 1].startsWith("--") ? args[i + 1] : fallback;
};
const port = +opt("port", process.env.PORT || 8787);
const upstream = new URL(opt("upstream", process.env.SLUICE_UPSTREAM || "http://127.0.0.1:8086"));
const mock = args.includes("--mock");
const token = opt("token", "");
const dist = resolve(opt("dist", join(here, "dist")));

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

// The policy the sluice binary sends with the page: nothing from elsewhere.
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
  "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

function send(res, status, body, type = "application/json") {
  const data = typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const headers = { "Content-Type": type, "Cache-Control": "no-cache" };
  if (type.startsWith("text/html")) headers["Content-Security-Policy"] = CSP;
  res.writeHead(status, headers);
  res.end(data);
}

async function serveStatic(req, res, path) {
  let rel = path.replace(/^\/ui\/?/, "") || "index.html";
  rel = normalize(rel).replace(/^(\.\.[/\\])+/, "");
  const file = join(dist, rel);
  if (!file.startsWith(dist)) return send(res, 403, { error: "forbidden" });
  try {
    const data = await readFile(file);
    send(res, 200, data, TYPES[extname(file)] || "application/octet-stream");
  } catch {
    send(res, 404, "not found", "text/plain");
  }
}

function readBody(req) {
  return new Promise((ok, fail) => {
    const parts = [];
    req.on("data", (c) => parts.push(c));
    req.on("end", () => ok(Buffer.concat(parts)));
    req.on("error", fail);
  });
}

async function answerMock(req, res, url, body) {
  if (token && req.headers.authorization !== "Token " + token) {
    return send(res, 401, { error: "authentication required: send Authorization: Token <token>" });
  }
  const path = url.pathname;
  if (path === "/api/v1/status") return send(res, 200, { ...sampleStatus(), auth: !!token });
  if (path === "/api/v1/schema") return send(res, 200, sampleSchema());
  if (path === "/api/v1/sql") {
    let q;
    try {
      q = body.length ? JSON.parse(body.toString("utf8")) : {};
    } catch (e) {
      return send(res, 400, { error: `body must be JSON {"db": …, "sql": …}: ${e.message}` });
    }
    const sql = q.sql || q.q || url.searchParams.get("q") || "";
    const format = (q.format || url.searchParams.get("format") || "json").toLowerCase();
    try {
      const result = mockQuery(sql);
      if (format === "csv") return send(res, 200, toCsv(result), "text/csv; charset=utf-8");
      return send(res, 200, result);
    } catch (e) {
      if (!(e instanceof SqlError)) throw e;
      const err = { error: e.message, sqlstate: e.sqlstate };
      if (e.position) err.position = e.position;
      return send(res, e.status, err);
    }
  }
  if (path === "/write") {
    const db = url.searchParams.get("db");
    if (!db) return send(res, 400, { error: "db is required: add ?db=<name>" });
    const r = mockWrite(db, body.toString("utf8"));
    if (r.status === 204) {
      res.writeHead(204);
      return res.end();
    }
    return send(res, r.status, r.body);
  }
  return send(res, 404, { error: "not found" });
}

function proxy(req, res, url, body) {
  const headers = { ...req.headers, host: upstream.host };
  delete headers["accept-encoding"];
  const up = http.request(
    { host: upstream.hostname, port: upstream.port || 80, method: req.method, path: url.pathname + url.search, headers },
    (ur) => {
      const fallback = ur.statusCode === 404 && (url.pathname === "/api/v1/status" || url.pathname === "/api/v1/schema");
      if (fallback) {
        ur.resume();
        return send(res, 200, url.pathname === "/api/v1/status" ? sampleStatus() : sampleSchema());
      }
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    },
  );
  up.on("error", (e) => send(res, 502, { error: `dev server: upstream ${upstream.origin} unreachable (${e.code || e.message})` }));
  up.end(body);
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  const path = url.pathname;
  try {
    if (path === "/" || path === "/ui") {
      res.writeHead(302, { Location: "/ui/" });
      return res.end();
    }
    if (path.startsWith("/ui/")) return await serveStatic(req, res, path);
    const body = await readBody(req);
    if (mock) return await answerMock(req, res, url, body);
    return proxy(req, res, url, body);
  } catch (e) {
    send(res, 500, { error: "dev server: " + e.message });
  }
});

server.listen(port, "127.0.0.1", () => {
  const mode = mock ? "mock API" + (token ? " (token required)" : "") : "API from " + upstream.origin;
  console.log(`Sluice console on http://127.0.0.1:${port}/ui/ — ${mode}, files from ${dist}`);
});
