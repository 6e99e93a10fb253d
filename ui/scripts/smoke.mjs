#!/usr/bin/env node
// Browser smoke test of the console through chromedriver (W3C WebDriver over
// plain HTTP, no packages). Drives every view against a running console,
// takes screenshots in both themes and fails on browser console errors.
//
//   node scripts/smoke.mjs --url http://127.0.0.1:8787/ui/ [--token T]
//        [--shots /tmp/ui-shots] [--driver http://127.0.0.1:9515] [--expect-mock]
//
// Start chromedriver first: chromedriver --port=9515

import { writeFileSync, mkdirSync, mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

const args = process.argv.slice(2);
const opt = (n, d) => (args.includes("--" + n) ? args[args.indexOf("--" + n) + 1] : d);
const URL_ = opt("url", "http://127.0.0.1:8787/ui/");
const DRIVER = opt("driver", "http://127.0.0.1:9515");
const SHOTS = opt("shots", "/tmp/ui-shots");
const TOKEN = opt("token", "");
const MOCK = args.includes("--expect-mock");
// Expect live ingest (rates above zero, dead letters present): the mock has them, a server needs a load.
const LIVE = MOCK || args.includes("--expect-live");
const TS_QUERY = opt("ts-query", "SELECT * FROM cpu WHERE time > now() - INTERVAL '1 hour'");
mkdirSync(SHOTS, { recursive: true });

let sid;
async function wd(method, path, body) {
  const res = await fetch(`${DRIVER}/session${sid ? "/" + sid : ""}${path}`, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (json.value && json.value.error) throw new Error(`${method} ${path}: ${json.value.error}: ${json.value.message}`);
  return json.value;
}
const EL = "element-6066-11e4-a52e-4f735466cecf";
const find = async (css) => (await wd("POST", "/element", { using: "css selector", value: css }))[EL];
const findAll = async (css) => (await wd("POST", "/elements", { using: "css selector", value: css })).map((e) => e[EL]);
const click = async (css) => wd("POST", `/element/${await find(css)}/click`, {});
const type = async (css, text) => wd("POST", `/element/${await find(css)}/value`, { text });
const js = (script, ...a) => wd("POST", "/execute/sync", { script, args: a });
const text = (css) => js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null", css);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(desc, fn, ms = 8000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + desc);
    await sleep(100);
  }
}
async function shot(name) {
  const b64 = await wd("GET", "/screenshot");
  writeFileSync(join(SHOTS, name + ".png"), Buffer.from(b64, "base64"));
}
const checks = [];
function check(name, ok, detail = "") {
  checks.push({ name, ok: !!ok, detail });
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? " — " + detail : ""}`);
}
const CTRL = "\uE009";
const ENTER = "\uE007";

async function runQuery(sql) {
  await click("#editor .cm-content");
  await type("#editor .cm-content", CTRL + "a" + CTRL); // select all, release ctrl
  await type("#editor .cm-content", "\uE017"); // delete
  await js("window.sluiceConsole.setQuery(arguments[0])", sql);
  await type("#editor .cm-content", CTRL + ENTER + CTRL);
  await waitFor("query to finish", async () => !(await text("#result-status")).startsWith("Running"));
}

async function main() {
  const s = await fetch(`${DRIVER}/session`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      capabilities: {
        alwaysMatch: {
          browserName: "chrome",
          "goog:loggingPrefs": { browser: "ALL" },
          "goog:chromeOptions": {
            binary: "/usr/bin/chromium",
            args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--window-size=1400,900", `--user-data-dir=${mkdtempSync(join(tmpdir(), "ui-smoke-"))}`],
          },
        },
      },
    }),
  }).then((r) => r.json());
  sid = s.value.sessionId;
  if (!sid) throw new Error("no session: " + JSON.stringify(s));
  try {
    await wd("POST", "/url", { url: URL_ });
    if (TOKEN) {
      await waitFor("login dialog", () => js("return document.querySelector('#login').open"));
      check("login dialog opens on 401", true);
      await shot("login");
      await type("#token-input", TOKEN);
      await click("#login-submit");
      await waitFor("dialog closed", async () => !(await js("return document.querySelector('#login').open")));
      check("token stored", (await js("return localStorage.getItem('sluice.token')")) === TOKEN);
    }
    await waitFor("editor", () => js("return !!document.querySelector('#editor .cm-content')"));
    if (opt("db", "")) await js("window.sluiceConsole.setDb(arguments[0])", opt("db", ""));

    // 100k rows in the grid.
    await runQuery("SELECT * FROM generate_series(1, 100000)");
    const st = await text("#result-status");
    check("100k rows status", /100000 rows/.test(st), st);
    const rowsInDom = (await findAll("#grid .grid-row")).length;
    check("virtual grid keeps few rows in the DOM", rowsInDom > 5 && rowsInDom < 120, `${rowsInDom} rows`);
    const perf = await js(`
      const g = document.querySelector('#grid'); const times = [];
      return new Promise((res) => {
        let i = 0;
        const step = () => {
          const t0 = performance.now();
          g.scrollTop = (i * 97331) % (g.scrollHeight - g.clientHeight);
          g.dispatchEvent(new Event('scroll'));
          requestAnimationFrame(() => { times.push(performance.now() - t0); if (++i < 60) step(); else res(times); });
        };
        step();
      });`);
    const worst = Math.max(...perf);
    const avg = perf.reduce((a, b) => a + b, 0) / perf.length;
    check("scrolling 100k rows stays fast", avg < 40, `avg ${avg.toFixed(1)} ms/frame, worst ${worst.toFixed(1)} ms`);
    await js("const g = document.querySelector('#grid'); g.scrollTop = 24 * 50000; g.dispatchEvent(new Event('scroll'))");
    await sleep(200);
    const mid = await js("return [...document.querySelectorAll('#grid .grid-row')].map(r => +r.children[1].textContent).sort((a,b)=>a-b)");
    check("rows near the middle render their values", mid.includes(50001), `first ${mid[0]}, last ${mid[mid.length - 1]}`);
    const hdr = await js("return [...document.querySelectorAll('#grid .grid-header .cell')].map(c => c.textContent)");
    check("header shows name and type", hdr.length === 1 && /value/.test(hdr[0]) && /Int64/.test(hdr[0]), hdr.join("|"));
    await shot("sql-100k");

    // A time series with tags: a chart.
    await runQuery(TS_QUERY);
    const hasChart = await waitFor("uplot", () => js("return !!document.querySelector('#chart .uplot')"), 5000).catch(() => false);
    check("time-series result draws a chart", hasChart);
    const legend = await js("return [...document.querySelectorAll('#chart .u-legend .u-series th')].map(t => t.textContent)");
    check("one series per tag value × field", legend.length > 1, legend.slice(0, 7).join(" | "));
    await shot("sql-chart-" + (await js("return getComputedStyle(document.body).backgroundColor")).replace(/\W+/g, ""));
    await click('button[data-range="6h"]');
    await waitFor("rerun", async () => !(await text("#result-status")).startsWith("Running"));
    const ed = await js("return window.sluiceConsole.editor.getText()");
    check("preset rewrites the bound", ed.includes("INTERVAL '6 hours'") && !ed.includes("'1 hour'"), ed);

    // Downloads and auto-refresh, watched through hooks in the page.
    await js(`window.__blobs = []; const o = URL.createObjectURL; URL.createObjectURL = (b) => { window.__blobs.push(b); return o.call(URL, b); };
      window.__sql = 0; const f = window.fetch; window.fetch = (u, o) => { if (String(u).includes('/api/v1/sql')) window.__sql++; return f(u, o); };`);
    await click("#download-csv");
    await waitFor("csv blob", () => js("return window.__blobs.length === 1"));
    const csvText = await wd("POST", "/execute/async", { script: "window.__blobs[0].text().then(arguments[0])", args: [] });
    check("CSV download", /^time,host/.test(csvText), csvText.split("\n")[0]);
    await click("#download-json");
    await waitFor("json blob", () => js("return window.__blobs.length === 2"));
    const jsonText = await wd("POST", "/execute/async", { script: "window.__blobs[1].text().then(arguments[0])", args: [] });
    check("JSON download", JSON.parse(jsonText).columns.length > 0, jsonText.slice(0, 60));
    const histBefore = (await findAll("#history li")).length;
    await js("const s = document.querySelector('#refresh-select'); s.value = '1000'; s.dispatchEvent(new Event('change'))");
    const n0 = await js("return window.__sql");
    await sleep(3300);
    const n1 = await js("return window.__sql");
    await js("const s = document.querySelector('#refresh-select'); s.value = '0'; s.dispatchEvent(new Event('change'))");
    await sleep(1500);
    const n2 = await js("return window.__sql");
    check("auto-refresh every second, then off", n1 - n0 >= 2 && n1 - n0 <= 4 && n2 - n1 <= 1, `${n1 - n0} runs in 3.3 s, ${n2 - n1} after off`);
    check("refreshes stay out of the history", (await findAll("#history li")).length === histBefore);

    // Error with position.
    await runQuery("SELECT *\nFROMM cpu");
    const errShown = await js("const e = document.querySelector('#error'); return !e.hidden && e.getAttribute('data-sqlstate')");
    check("error box with SQLSTATE", !!errShown, String(errShown));
    const marked = await js("return !!document.querySelector('#editor .cm-sql-error')");
    check("error position marked in the editor", marked, await text("#error"));
    await shot("sql-error");
    const hist = (await findAll("#history li")).length;
    check("history lists queries", hist >= 3, `${hist} entries`);

    // Theme toggle.
    const before = await js("return getComputedStyle(document.body).backgroundColor");
    await click("#theme-toggle");
    const after = await js("return getComputedStyle(document.body).backgroundColor");
    check("theme toggle changes colours", before !== after, `${before} → ${after}`);
    await runQuery("SELECT * FROM cpu WHERE host = 'edge-a'");
    await shot("sql-other-theme");

    // Schema.
    await click('button[data-view="schema"]');
    await waitFor("schema tables", () => js("return document.querySelectorAll('.schema-table').length > 0"));
    await shot("schema");
    const first = await js("const t = document.querySelector('.schema-table'); return [t.dataset.db, t.dataset.table]");
    await click(`.schema-table[data-db="${first[0]}"][data-table="${first[1]}"]`);
    const q = await js("return window.sluiceConsole.editor.getText()");
    check("table click fills SELECT and shows SQL", !(await js("return document.querySelector('#view-sql').hidden")) && /^SELECT \* FROM .+ LIMIT 100$/.test(q), q);
    await click('button[data-view="schema"]');
    await click(".schema-column");
    const q2 = await js("return window.sluiceConsole.editor.getText()");
    check("column click inserts its name", q2.length > q.length, q2);

    // Write.
    await click('button[data-view="write"]');
    await js("document.querySelector('#lp-db').value = 'smoke'");
    await type("#lp-input", "smoke,host=a v=1 1733270000000000000\nsmoke,host=b v=2 1733270000000000001\n");
    await click("#lp-submit");
    await waitFor("write result", async () => /written/.test(await text("#write-result")));
    check("line protocol written", true, await text("#write-result"));
    await js("document.querySelector('#lp-input').value = ''");
    await type("#lp-input", "smoke v=1\nthis is not line protocol\nsmoke v=2\n");
    await click("#lp-submit");
    await waitFor("line errors", () => js("return document.querySelectorAll('#write-result .line-error').length > 0"));
    check("per-line errors listed", true, await text("#write-result .line-error"));
    const csvPath = join(SHOTS, "smoke.csv");
    writeFileSync(csvPath, 'time,host,usage,ok,note\n2026-12-04T01:00:00Z,a,1.5,true,"x, ""y"""\n2026-12-04T01:00:01Z,b,,false,\n2026-12-04T01:00:02Z,c,2,true,plain\n');
    await type("#csv-file", csvPath);
    await waitFor("csv preview", async () => ((await text("#csv-preview")) || "").includes("smoke"));
    const prev = await text("#csv-preview");
    check("CSV preview", prev.includes('smoke,host=a usage=1,ok=true,note="x, \\"y\\""') || prev.includes("smoke,host=a"), prev.split("\n")[0]);
    await click("#csv-submit");
    await waitFor("csv written", async () => /written/.test(await text("#write-result")));
    check("CSV imported", true, await text("#write-result"));
    await shot("write");

    // Ingest.
    await click('button[data-view="ingest"]');
    await sleep(3500);
    const rate = await js("return +document.querySelector('#rate-http').dataset.rate");
    check("ingest shows an http rate", LIVE ? rate > 0 : rate >= 0, String(rate));
    const dl = await js("return [...document.querySelectorAll('#dead-letters tbody tr')].map(r => r.textContent)");
    check("dead letters listed", LIVE ? dl.length > 0 : true, dl[0] || (await text("#dead-empty")));
    await shot("ingest");
    await click("#theme-toggle");
    await sleep(1200);
    await shot("ingest-other-theme");

    // Tablet width.
    await wd("POST", "/window/rect", { width: 820, height: 1100 });
    await click('button[data-view="sql"]');
    await sleep(300);
    await shot("tablet-sql");
    await wd("POST", "/window/rect", { width: 1400, height: 900 });

    const logs = await wd("POST", "/se/log", { type: "browser" }).catch(() => []);
    // Chrome logs every 4xx answer; those here are the intended ones (bad SQL, bad lines, login).
    const bad = logs.filter((l) => l.level === "SEVERE" && !/Failed to load resource: the server responded with a status of 4\d\d/.test(l.message));
    check("no errors in the browser console", bad.length === 0, bad.map((l) => l.message).join(" ; "));
  } finally {
    await wd("DELETE", "", undefined).catch(() => {});
  }
  const failed = checks.filter((c) => !c.ok).length;
  console.log(`${checks.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
