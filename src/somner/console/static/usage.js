// Usage: the server aggregates (/admin/usage/series, /top, /errors for admin keys; /usage/series and /errors, the
// key's own records, for the others); the page fills in empty buckets and draws.
"use strict";

(() => {
  const { api, json, attempt, el, fill, fmt } = Somner;
  const $ = (id) => document.getElementById(id);
  const MAX_SERIES = 8;
  const admin = () => Somner.role() === "admin";
  const base = () => (admin() ? "/admin/usage" : "/usage");

  function choice() {
    const [since, bucket] = $("range").value.split("|");
    return { since, bucket, by: $("by").value, metric: $("metric").value };
  }

  // Every bucket of the period (UTC), as the server labels them, oldest first.
  function buckets(since, bucket) {
    const hours = { "24h": 24, "7d": 24 * 7, "30d": 24 * 30 }[since];
    const step = bucket === "hour" ? 3600e3 : 86400e3;
    const end = Date.now();
    const labels = [];
    for (let t = end - hours * 3600e3; t <= end + step; t += step) {
      const iso = new Date(t).toISOString();
      const label = bucket === "hour" ? `${iso.slice(0, 13)}:00:00Z` : iso.slice(0, 10);
      if (!labels.includes(label) && t <= end) labels.push(label);
    }
    const last = bucket === "hour" ? `${new Date(end).toISOString().slice(0, 13)}:00:00Z` : new Date(end).toISOString().slice(0, 10);
    if (!labels.includes(last)) labels.push(last);
    return labels;
  }

  function value(row, metric) {
    if (metric === "tokens") return row.prompt_tokens + row.completion_tokens;
    return row[metric] || 0;
  }

  async function draw() {
    const { since, bucket, by, metric } = choice();
    const query = `since=${since}&bucket=${bucket}${by ? `&by=${by}` : ""}`;
    const body = await json(`${base()}/series?${query}`);
    const labels = buckets(since, bucket);
    const index = new Map(labels.map((l, i) => [l, i]));
    const groups = new Map();
    let total = 0;
    for (const row of body.data) {
      const name = by ? row[by] || "(none)" : "all requests";
      if (!groups.has(name)) groups.set(name, new Array(labels.length).fill(0));
      const i = index.get(row.bucket);
      if (i !== undefined) groups.get(name)[i] += value(row, metric);
      total += row.requests;
    }
    const series = [...groups.entries()]
      .map(([name, values]) => ({ name, values, sum: values.reduce((a, b) => a + b, 0) }))
      .sort((a, b) => b.sum - a.sum)
      .slice(0, MAX_SERIES);
    if (!series.length) series.push({ name: "all requests", values: new Array(labels.length).fill(0) });
    const chart = $("chart");
    SomnerChart.render(chart, labels, series, metric === "avg_latency_ms" ? "ms" : "");
    chart.dataset.total = String(total);
    $("chart-total").textContent = `${total.toLocaleString("en-US")} requests in the period`;
  }

  async function tables() {
    const { since } = choice();
    const [top, errors] = await Promise.all([
      admin() ? json(`/admin/usage/top?by=key&since=${since}&limit=10`) : { data: [] },
      json(`${base()}/errors?since=${since}&limit=20`),
    ]);
    fill(
      $("top-keys").querySelector("tbody"),
      top.data.map((r) =>
        el("tr", {}, el("td", { class: "mono" }, r.key || "(none)"), el("td", {}, fmt.num(r.requests)),
          el("td", {}, fmt.num(r.prompt_tokens + r.completion_tokens)), el("td", {}, r.errors), el("td", {}, fmt.ms(r.avg_latency_ms)))),
      "No requests in this period.",
    );
    fill(
      $("errors").querySelector("tbody"),
      errors.data.map((r) =>
        el("tr", {}, el("td", {}, new Date(r.time).toLocaleString()), el("td", {}, r.status), el("td", {}, r.route),
          el("td", {}, r.model || "—"), el("td", { class: "mono" }, r.key_id || "—"))),
      "No errors in this period.",
    );
  }

  async function refresh() {
    await attempt(() => Promise.all([draw(), tables()]));
  }

  async function exportCsv() {
    await attempt(async () => {
      const { since, bucket, by } = choice();
      const response = await api(`${base()}/series?since=${since}&bucket=${bucket}${by ? `&by=${by}` : ""}&format=csv`);
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: `somner-usage-${since}-${bucket}${by ? "-by-" + by : ""}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!Somner.key()) return;
    if (!admin()) {
      // A user key sees its own usage: no split by key, no table of keys.
      $("by").querySelector('option[value="key"]').remove();
      $("top-keys-card").hidden = true;
      $("usage-scope").textContent = "The usage of the key you signed in with.";
    }
    for (const id of ["range", "by", "metric"]) $(id).addEventListener("change", refresh);
    $("refresh").addEventListener("click", refresh);
    $("export-csv").addEventListener("click", exportCsv);
    refresh();
  });
})();
