#!/usr/bin/env python3
"""What the console costs, for benches/console.sh.

  cost   URL PID CALLS         server CPU per call of /health, /api/v1/status,
                               /api/v1/schema and /metrics (keep-alive HTTP)
  render URL CHROMEDRIVER RUNS  grid of 100,000 rows and chart of 100,000 points
                               in headless Chromium, medians of RUNS
  open   URL CHROMEDRIVER SECS  keeps the console's ingest view open for SECS
  md-cost JSON, md-render JSON  the figures above as Markdown table rows

Standard library only; the browser is Debian's chromium through its
chromedriver, started by the caller. Prints one JSON object.
"""
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # After "pid (comm)", utime and stime are the 12th and 13th fields.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def cost(url, pid, calls):
    u = urllib.parse.urlparse(url)
    out = {}
    for path in ["/health", "/api/v1/status", "/api/v1/schema", "/metrics"]:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        before = cpu_seconds(pid)
        started = time.perf_counter()
        for _ in range(calls):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                sys.exit(f"{path}: HTTP {r.status}")
        wall = time.perf_counter() - started
        out[path] = {
            "server_cpu_ms_per_call": (cpu_seconds(pid) - before) * 1000 / calls,
            "latency_ms": wall * 1000 / calls,
        }
        conn.close()
    return out


class Driver:
    def __init__(self, base):
        self.base = base
        self.profile = tempfile.mkdtemp()
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1400,900",
                         f"--user-data-dir={self.profile}"],
            },
        }}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)["value"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def goto(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def js_async(self, script, *args):
        return self.call("POST", self.s("/execute/async"), {"script": script, "args": list(args)})

    def close(self):
        self.call("DELETE", self.s(""))


# Runs a query through the console as its Run button does and resolves once
# the result is on screen (two animation frames after the grid and the
# chart were built), with the console's own split of the time.
RUN = """
const [sql, wantRows, wantChart, done] = arguments;
const c = window.sluiceConsole;
document.querySelector(`button[data-mode="${wantChart ? 'both' : 'grid'}"]`).click();
document.querySelector('#result-status').textContent = '';
const t0 = performance.now();
c.setQuery(sql);
c.run();
const check = () => {
  const st = document.querySelector('#result-status').textContent;
  const charted = !wantChart || document.querySelector('#chart .uplot canvas');
  if (st.startsWith(wantRows + ' rows') && charted) {
    requestAnimationFrame(() => requestAnimationFrame(() =>
      done(Object.assign({painted_ms: performance.now() - t0}, c.timings))));
  } else if (st.startsWith('Error')) {
    done({error: st});
  } else {
    setTimeout(check, 2);
  }
};
check();
"""


def render(url, driver_url, runs):
    d = Driver(driver_url)
    try:
        d.goto(url.rstrip("/") + "/ui/")
        d.js_async("const done = arguments[arguments.length - 1];"
                   "const w = () => window.sluiceConsole ? done(1) : setTimeout(w, 20); w();")
        cases = {
            "grid_100k_rows": ("SELECT * FROM bench.cpu ORDER BY time LIMIT 100000", False),
            "chart_100k_points": ("SELECT time, usage_user FROM bench.cpu ORDER BY time LIMIT 100000", True),
        }
        out = {}
        for name, (sql, chart) in cases.items():
            # The same request outside the browser: the server's and the
            # network's part of the time.
            body = json.dumps({"sql": sql, "format": "json"}).encode()
            server = []
            for _ in range(runs):
                started = time.perf_counter()
                req = urllib.request.Request(url.rstrip("/") + "/api/v1/sql", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=120) as r:
                    size = len(r.read())
                server.append((time.perf_counter() - started) * 1000)
            samples = []
            for _ in range(runs):
                r = d.js_async(RUN, sql, 100000, chart)
                if "error" in r:
                    sys.exit(f"{name}: {r['error']}")
                samples.append(r)
            out[name] = {k: statistics.median(s[k] for s in samples)
                         for k in ["fetch_ms", "grid_ms", "chart_ms", "painted_ms"]}
            out[name]["server_ms"] = statistics.median(server)
            out[name]["bytes"] = size
        return out
    finally:
        d.close()


def keep_open(url, driver_url, secs):
    d = Driver(driver_url)
    try:
        d.goto(url.rstrip("/") + "/ui/")
        d.call("POST", d.s("/execute/sync"),
               {"script": "document.querySelector('button[data-view=\"ingest\"]').click();", "args": []})
        time.sleep(secs)
        rate = d.call("POST", d.s("/execute/sync"), {
            "script": "return document.querySelector('#rate-http').getAttribute('data-rate');",
            "args": []})
        return {"seconds": secs, "last_http_rate_shown": rate}
    finally:
        d.close()


def main():
    # Stopped by the script: close the browser session on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cmd = sys.argv[1]
    if cmd == "cost":
        print(json.dumps(cost(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    elif cmd == "render":
        print(json.dumps(render(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif cmd == "md-cost":
        for path, v in json.loads(sys.argv[2]).items():
            print(f"| `{path}` | {v['server_cpu_ms_per_call']:.3f} | {v['latency_ms']:.3f} |")
    elif cmd == "md-render":
        for name, v in json.loads(sys.argv[2]).items():
            print(f"| {name} | {v['bytes'] / 1e6:.1f} | {v['server_ms']:.0f} | {v['fetch_ms']:.0f} "
                  f"| {v['grid_ms']:.1f} | {v['chart_ms']:.1f} | {v['painted_ms']:.0f} "
                  f"| {v['painted_ms'] - v['server_ms']:.0f} |")
    elif cmd == "open":
        print(json.dumps(keep_open(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
