// The ingest view: live rates per front end and database from the cumulative
// counters of /api/v1/status (delta rows / delta time), sparklines of the
// last five minutes, MQTT, Kafka and storage figures, and the newest dead
// letters from system.dead_letters.

import { $, h, setChildren, poller } from "./dom.js";
import { apiJson, runSql } from "./api.js";
import { sparkline, seriesColor } from "./chart.js";
import { formatBytes, formatNumber, formatDuration } from "./format.js";

const FRONTENDS = ["http", "tcp", "mqtt", "kafka"];
const HISTORY_POINTS = 300; // 5 minutes at one sample a second
const DEAD_LETTER_SQL = "SELECT time, source, topic, error, payload FROM system.dead_letters ORDER BY time DESC LIMIT 50";

/** Rates between two status samples: {frontends: {name: rows/s}, databases: {name: rows/s}}. */
export function computeRates(prev, cur) {
  const out = { frontends: {}, databases: {} };
  const dt = prev ? (cur.t - prev.t) / 1000 : 0;
  for (const [kind, key] of [["frontends", "frontends"], ["databases", "databases"]]) {
    for (const [name, rows] of Object.entries(cur[key])) {
      const before = prev ? prev[key][name] : undefined;
      // A counter that went down means the server restarted: no rate yet.
      out[kind][name] = dt > 0 && before !== undefined && rows >= before ? (rows - before) / dt : 0;
    }
  }
  return out;
}

function sample(status) {
  const ingest = status.ingest || {};
  const fe = {};
  for (const f of ingest.frontends || []) fe[f.name] = +f.rows || 0;
  const dbs = {};
  for (const d of ingest.databases || []) dbs[d.name] = +d.rows || 0;
  return { t: Number.isFinite(+status.now_ms) ? +status.now_ms : Date.now(), frontends: fe, databases: dbs };
}

function kv(el, pairs) {
  setChildren(
    el,
    pairs.filter(Boolean).map(([k, v]) => h("div", { class: "kv-row" }, h("span", { class: "kv-key" }, k), h("span", { class: "kv-value" }, v))),
  );
}

function rateText(r) {
  return `${formatNumber(r, r < 10 ? 1 : 0)} rows/s`;
}

export function initIngestView({ onStatus }) {
  let prev = null;
  let paused = false;
  const sparks = {};
  const hist = Object.fromEntries(FRONTENDS.map((f) => [f, { t: [], v: [] }]));
  const active = () => !$("#view-ingest").hidden && !paused;

  function ensureSparks() {
    FRONTENDS.forEach((f, i) => {
      if (sparks[f]) return;
      const root = document.querySelector(`.frontend[data-frontend="${f}"] .spark`);
      if (root && root.clientWidth) sparks[f] = sparkline(root, seriesColor(i));
    });
  }

  function renderStatus(st) {
    const cur = sample(st);
    const first = prev === null;
    const rates = computeRates(prev, cur);
    prev = cur;
    $("#ingest-info").textContent = `Sluice ${st.version || "?"} · up ${formatDuration(st.uptime_seconds)} · updated ${new Date().toLocaleTimeString()}`;

    // Front ends.
    const byName = Object.fromEntries(((st.ingest || {}).frontends || []).map((f) => [f.name, f]));
    ensureSparks();
    for (const name of FRONTENDS) {
      const f = byName[name];
      const rate = rates.frontends[name] || 0;
      const el = $(`#rate-${name}`);
      el.dataset.rate = String(Math.round(rate * 100) / 100);
      el.textContent = rateText(rate);
      const card = el.closest(".frontend");
      const badge = card.querySelector("[data-enabled]");
      const enabled = f ? f.enabled !== false : false;
      badge.textContent = f ? (enabled ? "on" : "off") : "absent";
      badge.className = "badge " + (enabled ? "ok" : "off");
      card.classList.toggle("disabled", !enabled);
      kv(card.querySelector(".kv"), [
        ["rows", formatNumber(f && f.rows)],
        ["writes", formatNumber(f && f.writes)],
        ["rejected lines", formatNumber(f && f.rejected_lines)],
        ["failures", formatNumber(f && f.failures)],
      ]);
      const hs = hist[name];
      if (first) continue; // no rate from a single sample
      hs.t.push(cur.t / 1000);
      hs.v.push(rate);
      if (hs.t.length > HISTORY_POINTS) {
        hs.t.shift();
        hs.v.shift();
      }
      if (sparks[name]) sparks[name].setData([hs.t, hs.v]);
    }

    // Databases.
    const dbs = ((st.ingest || {}).databases || []).slice().sort((a, b) => (rates.databases[b.name] || 0) - (rates.databases[a.name] || 0) || (a.name < b.name ? -1 : 1));
    setChildren(
      $("#db-rates tbody"),
      dbs.length
        ? dbs.map((d) =>
            h("tr", { dataset: { db: d.name } }, h("td", null, d.name),
              h("td", { class: "num", dataset: { rate: String(Math.round((rates.databases[d.name] || 0) * 100) / 100) } }, formatNumber(rates.databases[d.name] || 0, 1)),
              h("td", { class: "num" }, formatNumber(d.rows))))
        : null,
    );
    $("#db-empty").textContent = dbs.length ? "" : "No writes yet.";

    // Storage.
    const s = st.storage || {};
    const used = +s.buffer_bytes || 0;
    const limit = +s.memory_limit_bytes || 0;
    const pct = limit > 0 ? Math.min(100, (used / limit) * 100) : 0;
    const meter = $("#storage-buffer");
    meter.dataset.value = String(used);
    meter.dataset.limit = String(limit);
    meter.querySelector(".meter-fill").style.width = pct.toFixed(1) + "%";
    meter.classList.toggle("warn", pct > 75);
    meter.querySelector(".meter-text").textContent = `Buffer ${formatBytes(used)} of ${limit ? formatBytes(limit) : "no limit"} (${pct.toFixed(1)}%)`;
    kv($("#storage-kv"), [
      ["chunks", formatNumber(s.chunks)],
      ["flushes (chunks written)", formatNumber(s.chunks_written)],
      ["compactions", formatNumber(s.compactions)],
      ["backpressure rejections", formatNumber(s.backpressure_rejections)],
      ["log syncs", formatNumber(s.log_syncs)],
      ["log bytes synced", formatBytes(s.log_bytes_synced)],
    ]);
    setChildren(
      $("#shards tbody"),
      (s.shards || []).map((sh) =>
        h("tr", null, ...[sh.shard, formatBytes(sh.buffer_bytes), sh.chunks, sh.chunks_written, sh.compactions, sh.backpressure_rejections, sh.log_syncs, sh.raft_last_index]
          .map((v, i) => h("td", { class: i ? "num" : "" }, typeof v === "number" ? formatNumber(v) : v ?? "–")))),
    );

    // MQTT.
    const m = st.mqtt;
    for (const [id, key] of [["#mqtt-clients", "clients"], ["#mqtt-sessions", "sessions"], ["#mqtt-subscriptions", "subscriptions"]]) {
      const el = $(id);
      el.dataset.value = m ? String(+m[key] || 0) : "0";
      el.textContent = m ? formatNumber(m[key]) : "–";
    }
    $("#mqtt-info").textContent = m ? `Broker on ${m.addr || "?"}` : "MQTT is off";
    kv($("#mqtt-kv"), m ? [["messages stored", formatNumber(m.messages_stored)], ["rows stored", formatNumber(m.rows_stored)], ["dead letters", formatNumber(m.dead_letters)]] : []);

    // Kafka.
    const k = st.kafka;
    const parts = k ? k.partitions || [] : [];
    const topics = k ? k.topics || [...new Set(parts.map((p) => p.topic))] : [];
    $("#kafka-info").textContent = k
      ? [
          `Topics ${topics.join(", ") || "–"}`,
          `${formatNumber(k.messages)} messages`,
          `${formatNumber(k.rows)} rows`,
          `${formatNumber(k.dead_letters)} dead letters`,
          k.backpressure_pauses != null ? `${formatNumber(k.backpressure_pauses)} backpressure pauses` : null,
          k.offset_commit_failures ? `${formatNumber(k.offset_commit_failures)} failed offset commits` : null,
          k.paused ? "PAUSED (backpressure)" : null,
        ].filter(Boolean).join(" · ")
      : "Kafka is off";
    setChildren(
      $("#kafka-partitions tbody"),
      parts.length
        ? parts.map((p) =>
            h("tr", { class: (+p.lag > 0 ? "lagging" : "") + (p.assigned === false ? " unassigned" : ""), title: p.assigned === false ? "not assigned to this consumer" : null },
              h("td", null, p.topic), h("td", { class: "num" }, p.partition),
              h("td", { class: "num" }, formatNumber(p.committed_offset)), h("td", { class: "num" }, formatNumber(p.high_watermark)),
              h("td", { class: "num" }, p.rows_per_second != null ? formatNumber(p.rows_per_second, 1) : "–"),
              h("td", { class: "num lag", dataset: { lag: String(p.lag ?? "") } }, formatNumber(p.lag))))
        : null,
    );
    $("#kafka-partitions").hidden = !k;
    $("#kafka-empty").textContent = k && !parts.length ? "No partitions assigned." : "";

    const q = st.query || {};
    kv($("#query-kv"), [
      ["queries", formatNumber(q.queries)],
      ["chunks answered from statistics", formatNumber(q.chunks_from_stats)],
      ["chunks decoded", formatNumber(q.chunks_decoded)],
    ]);
    $("#dead-count").textContent = st.dead_letters != null ? `${formatNumber(st.dead_letters)} in total` : "";
  }

  async function pollStatus() {
    try {
      const st = await apiJson("/api/v1/status");
      $("#ingest-error").hidden = true;
      renderStatus(st);
      onStatus(st);
    } catch (e) {
      const box = $("#ingest-error");
      box.hidden = false;
      box.textContent = "Cannot read /api/v1/status: " + e.message;
    }
  }

  async function pollDeadLetters() {
    const tbody = $("#dead-letters tbody");
    try {
      const res = await runSql(DEAD_LETTER_SQL);
      const idx = Object.fromEntries(res.columns.map((c, i) => [c.name, i]));
      const cell = (row, name) => (idx[name] === undefined ? "" : row[idx[name]] ?? "");
      setChildren(
        tbody,
        res.rows.length
          ? res.rows.map((r) => {
              const payload = String(cell(r, "payload"));
              return h("tr", null, h("td", { class: "nowrap" }, cell(r, "time")), h("td", null, cell(r, "source")), h("td", null, cell(r, "topic")),
                h("td", { class: "dl-error" }, cell(r, "error")),
                h("td", { class: "dl-payload", title: payload }, h("code", null, payload.length > 300 ? payload.slice(0, 300) + "…" : payload)));
            })
          : null,
      );
      $("#dead-empty").textContent = res.rows.length ? "" : "No dead letters.";
    } catch (e) {
      tbody.replaceChildren();
      $("#dead-empty").textContent = "Dead letters unavailable: " + e.message;
    }
  }

  const statusPoll = poller(pollStatus, 1000, active);
  const deadPoll = poller(pollDeadLetters, 5000, active);
  $("#ingest-pause").addEventListener("click", (e) => {
    paused = !paused;
    e.target.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      statusPoll.tick();
      deadPoll.tick();
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && active()) {
      statusPoll.tick();
      deadPoll.tick();
    }
  });

  return {
    show() {
      statusPoll.start();
      deadPoll.start();
      requestAnimationFrame(ensureSparks);
    },
    hide() {
      statusPoll.stop();
      deadPoll.stop();
    },
  };
}
