// Logs and health: the request log live (/admin/logs/stream, read with fetch so the key goes in a header),
// /health, the pools' engines (/admin/backends) and a few figures from /metrics.
"use strict";

(() => {
  const { api, json, attempt, readEvents, el, fill, fmt } = Somner;
  const $ = (id) => document.getElementById(id);
  const MAX_ROWS = 200;

  // The figures shown, from the Prometheus text: a sum over every series of a metric, or a mean (sum / count).
  const FIGURES = [
    ["Requests answered", (m) => m.sum("somner_requests_total")],
    ["Requests refused", (m) => m.sum("somner_rejected_requests_total")],
    ["Prompt tokens", (m) => m.sum("somner_prompt_tokens_total")],
    ["Completion tokens", (m) => m.sum("somner_completion_tokens_total")],
    ["Mean request time", (m) => fmt.ms(m.mean("somner_request_duration_seconds") * 1000)],
    ["Mean time to first token", (m) => fmt.ms(m.mean("somner_time_to_first_token_seconds") * 1000)],
    ["Mean queue wait", (m) => fmt.ms(m.mean("somner_queue_wait_seconds") * 1000)],
    ["Queue depth", (m) => m.sum("somner_queue_depth")],
    ["Requests in flight", (m) => m.sum("somner_in_flight_requests")],
    ["Models loaded", (m) => m.sum("somner_loaded_models")],
    ["Model memory", (m) => fmt.bytes(m.sum("somner_model_memory_bytes"))],
  ];

  function parseMetrics(text) {
    const values = new Map();
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      values.set(match[1], (values.get(match[1]) || 0) + Number(match[3]));
    }
    const sum = (name) => values.get(name) || 0;
    return {
      sum,
      mean: (name) => (sum(`${name}_count`) ? sum(`${name}_sum`) / sum(`${name}_count`) : null),
    };
  }

  async function health() {
    const [h, pools, metrics] = await Promise.all([
      fetch("/health", { cache: "no-store", credentials: "omit" }).then((r) => r.json()),
      json("/admin/backends"),
      api("/metrics").then((r) => r.text()),
    ]);
    $("health").replaceChildren(
      el("p", {}, el("span", { class: `badge state-${h.status}`, id: "health-status" }, h.status),
        ` version ${h.version} · up ${Math.round(h.uptime_s)} s · ready: ${h.ready ? "yes" : "no"} · database: ${h.database ? "ok" : "unreachable"} · queue ${h.queue_depth} · in flight ${h.in_flight}`),
      ...(h.gpus || []).map((g) => el("p", { class: "hint" }, `GPU ${g.index}: ${fmt.bytes(g.used_bytes)} of ${fmt.bytes(g.total_bytes)}`)),
    );
    const pooled = new Map(pools.data.map((p) => [p.model, p.members]));
    const rows = [];
    for (const [model, s] of Object.entries(h.models)) {
      const members = pooled.get(model);
      if (members) {
        for (const m of members) {
          rows.push(el("tr", {}, el("td", {}, model), el("td", {}, `${m.name} (${m.backend})`),
            el("td", {}, el("span", { class: `badge state-${m.state}` }, m.state)), el("td", {}, m.in_flight ?? "—"),
            el("td", {}, m.last_check_error || (m.recent_errors && m.recent_errors.length ? m.recent_errors.at(-1).message : ""))));
        }
      } else {
        rows.push(el("tr", {}, el("td", {}, model), el("td", {}, "engine"),
          el("td", {}, el("span", { class: `badge state-${s.state}` }, s.state)), el("td", {}, s.in_flight),
          el("td", {}, s.health === "ok" ? "" : s.health)));
      }
    }
    fill($("engines").querySelector("tbody"), rows, "No models.");
    const parsed = parseMetrics(metrics);
    fill($("figures").querySelector("tbody"), FIGURES.map(([name, get]) => el("tr", {}, el("td", {}, name), el("td", {}, get(parsed) ?? "—"))), "");
  }

  function logRow(e) {
    return el(
      "tr",
      { class: e.status >= 400 ? "failed" : "", "data-request-id": e.request_id, "data-route": e.route },
      el("td", {}, new Date(e.time * 1000).toLocaleTimeString()),
      el("td", {}, e.method),
      el("td", {}, e.route),
      el("td", {}, e.model || "—"),
      el("td", {}, e.status),
      el("td", {}, `${e.prompt_tokens}+${e.completion_tokens}`),
      el("td", {}, fmt.ms(e.latency_ms)),
      el("td", { class: "mono" }, e.key_prefix || "—"),
      el("td", { class: "mono" }, e.request_id),
    );
  }

  async function tail() {
    const badge = $("tail-state");
    const body = $("log").querySelector("tbody");
    for (;;) {
      const ok = await attempt(async () => {
        const response = await api("/admin/logs/stream");
        badge.textContent = "live";
        badge.className = "badge state-loaded";
        await readEvents(response, (data) => {
          body.prepend(logRow(JSON.parse(data)));
          while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
        });
        return true;
      });
      badge.textContent = "reconnecting";
      badge.className = "badge state-loading";
      if (!ok) return; // refused (not an admin key): the error is on the page
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!Somner.key()) return;
    const refresh = () => attempt(health, false);
    refresh();
    setInterval(refresh, 5000);
    tail();
  });
})();
