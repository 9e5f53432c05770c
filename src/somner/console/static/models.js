// Models: every configured model's state from /admin/models, load / unload / keep alive, the recent latency per
// model (/admin/usage/top), and pulls with a progress bar (/api/pull, streamed).
"use strict";

(() => {
  const { api, json, attempt, readLines, el, fill, fmt } = Somner;
  const $ = (id) => document.getElementById(id);
  const busy = new Set(); // models with an action under way
  let timer = null;

  function idle(model) {
    if (model.keep_loaded) return "kept loaded";
    if (!model.expires_at) return "—";
    const left = Math.max(0, Math.round(model.expires_at - Date.now() / 1000));
    return left >= 120 ? `in ${Math.round(left / 60)} min` : `in ${left} s`;
  }

  function state(model) {
    const text = busy.has(model.id) ? `${model.state} (working…)` : model.state;
    const badge = el("span", { class: `badge state-${model.state}`, "data-state": model.state }, text);
    if (model.state === "loading" && model.progress !== null && model.progress !== undefined) {
      return [badge, el("progress", { max: 1, value: model.progress })];
    }
    return model.error ? [badge, el("div", { class: "hint" }, model.error)] : [badge];
  }

  async function act(id, path, body) {
    busy.add(id);
    await refresh();
    await attempt(async () => {
      try {
        await api(`/admin/models/${encodeURIComponent(id)}/${path}`, { method: "POST", json: body });
      } finally {
        busy.delete(id);
      }
    });
    await refresh();
  }

  function row(model, latency) {
    const used = latency[model.id];
    const keep = () => act(model.id, "load", { keep_alive: $("keep-alive").value.trim() || "-1" });
    return el(
      "tr",
      { "data-model": model.id },
      el("td", {}, model.id, model.aliases.length ? el("div", { class: "hint" }, model.aliases.join(", ")) : null),
      el("td", { class: "state" }, state(model)),
      el("td", {}, model.backend),
      el("td", {}, model.parallel ? `${model.in_flight} of ${model.parallel} slots` : model.in_flight),
      el("td", {}, fmt.bytes(model.memory_estimate)),
      el("td", {}, model.state === "loaded" ? idle(model) : "—"),
      el("td", {}, used ? `${fmt.ms(used.avg_latency_ms)} (TTFT ${fmt.ms(used.avg_ttft_ms)}, ${used.requests} req)` : "—"),
      el(
        "td",
        { class: "actions" },
        el("button", { type: "button", class: "load", disabled: busy.has(model.id), onclick: () => act(model.id, "load") }, "Load"),
        el("button", { type: "button", class: "unload quiet", disabled: busy.has(model.id), onclick: () => act(model.id, "unload") }, "Unload"),
        el("button", { type: "button", class: "keep quiet", disabled: busy.has(model.id), onclick: keep }, "Keep alive"),
      ),
    );
  }

  async function refresh() {
    const ok = await attempt(async () => {
      const [models, recent] = await Promise.all([
        json("/admin/models"),
        json("/admin/usage/top?by=model&since=1h&limit=100"),
      ]);
      const latency = Object.fromEntries(recent.data.map((r) => [r.model, r]));
      fill($("models-table").querySelector("tbody"), models.data.map((m) => row(m, latency)), "No models are configured.");
      const loading = models.data.some((m) => m.state === "loading") || busy.size > 0;
      clearTimeout(timer);
      timer = setTimeout(refresh, loading ? 1000 : 5000);
      return true;
    }, false);
    if (!ok) clearTimeout(timer);
  }

  async function pull(event) {
    event.preventDefault();
    const bar = $("pull-progress");
    const status = $("pull-status");
    const name = $("pull-name").value.trim();
    $("pull-button").disabled = true;
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `pulling ${name}…`;
    await attempt(async () => {
      try {
        const response = await api("/api/pull", { method: "POST", json: { model: name, stream: true } });
        await readLines(response, (line) => {
          const update = JSON.parse(line);
          if (update.error) throw new Somner.ApiError(400, update.error);
          if (update.total) bar.value = update.completed / update.total;
          status.textContent = update.total
            ? `${update.status}: ${fmt.bytes(update.completed)} of ${fmt.bytes(update.total)}`
            : update.status;
        });
        bar.value = 1;
      } catch (err) {
        status.textContent = "the pull failed";
        bar.hidden = true;
        throw err;
      } finally {
        $("pull-button").disabled = false;
      }
      await refresh();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!Somner.key()) return;
    $("pull-form").addEventListener("submit", pull);
    refresh();
  });
})();
