// The playground: a streamed chat over /v1/chat/completions, with the sampler fields the API takes, and the
// time to first token, tokens per second and token counts of each answer.
"use strict";

(() => {
  const { api, json, attempt, readEvents, el, showError } = Somner;
  const $ = (id) => document.getElementById(id);
  const history = []; // the conversation so far: {role, content}
  let controller = null;

  function number(id, integer) {
    const text = $(id).value.trim();
    if (text === "") return undefined;
    return integer ? parseInt(text, 10) : parseFloat(text);
  }

  // The request body as the API receives it (fields left empty are not sent: the server's defaults apply).
  function requestBody(prompt) {
    const messages = [];
    const system = $("system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...history, { role: "user", content: prompt });
    const body = { model: $("model").value, messages, stream: true, stream_options: { include_usage: true } };
    const fields = [
      ["temperature", false],
      ["top_p", false],
      ["top_k", true],
      ["min_p", false],
      ["max_tokens", true],
      ["seed", true],
    ];
    for (const [name, integer] of fields) {
      const value = number(name, integer);
      if (value !== undefined) body[name] = value;
    }
    const stop = $("stop").value.split("\n").filter((s) => s !== "");
    if (stop.length) body.stop = stop;
    return body;
  }

  function bubble(role, text) {
    const content = el("div", { class: "content" }, text);
    const stats = el("div", { class: "stats" });
    const node = el("div", { class: `message ${role}`, "data-role": role }, el("div", { class: "role" }, role), content, stats);
    $("transcript").append(node);
    node.scrollIntoView({ block: "end" });
    return { node, content, stats };
  }

  async function send(event) {
    event.preventDefault();
    const prompt = $("prompt").value;
    if (!prompt.trim()) return;
    const body = requestBody(prompt);
    await attempt(async () => {
      controller = new AbortController();
      $("send").disabled = true;
      $("stop-button").disabled = false;
      const started = performance.now();
      let first = null;
      let usage = null;
      let text = "";
      let answer = null;
      try {
        const response = await api("/v1/chat/completions", { method: "POST", json: body, signal: controller.signal });
        bubble("user", prompt);
        $("prompt").value = "";
        answer = bubble("assistant", "");
        answer.node.classList.add("streaming");
        await readEvents(response, (data) => {
          if (data === "[DONE]") return;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Somner.ApiError(500, chunk.error.message || "The stream ended with an error.");
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices || []) {
            const piece = (choice.delta && choice.delta.content) || "";
            if (piece) {
              if (first === null) first = performance.now();
              text += piece;
              answer.content.textContent = text;
            }
          }
        });
      } finally {
        $("send").disabled = false;
        $("stop-button").disabled = true;
        controller = null;
        if (answer) answer.node.classList.remove("streaming");
      }
      const ended = performance.now();
      history.push({ role: "user", content: prompt }, { role: "assistant", content: text });
      const parts = [];
      if (first !== null) parts.push(`TTFT ${Math.round(first - started)} ms`);
      if (usage) {
        const seconds = first !== null ? (ended - first) / 1000 : 0;
        if (seconds > 0 && usage.completion_tokens > 1) {
          parts.push(`${((usage.completion_tokens - 1) / seconds).toFixed(1)} tokens/s`);
        }
        parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
      }
      answer.stats.textContent = parts.join(" · ");
      answer.node.dataset.done = "true";
    });
  }

  function curl(body) {
    return [
      `curl -N ${location.origin}/v1/chat/completions \\`,
      `  -H "Authorization: Bearer $SOMNER_API_KEY" \\`,
      `  -H "Content-Type: application/json" \\`,
      `  -d '${JSON.stringify(body, null, 2).replaceAll("'", "'\\''")}'`,
    ].join("\n");
  }

  // A JSON value as a Python literal.
  function py(value) {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) return `[${value.map(py).join(", ")}]`;
    if (typeof value === "object") {
      return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${py(v)}`).join(", ")}}`;
    }
    return JSON.stringify(value);
  }

  function python(body) {
    const known = ["model", "messages", "temperature", "top_p", "max_tokens", "seed", "stop", "stream_options"];
    const extra = Object.fromEntries(Object.entries(body).filter(([k]) => !known.includes(k) && k !== "stream"));
    const args = known.filter((k) => body[k] !== undefined).map((k) => `    ${k}=${py(body[k])},`);
    if (Object.keys(extra).length) args.push(`    extra_body=${py(extra)},`);
    return [
      "import os",
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url="${location.origin}/v1", api_key=os.environ["SOMNER_API_KEY"])`,
      "stream = client.chat.completions.create(",
      ...args,
      "    stream=True,",
      ")",
      "for chunk in stream:",
      "    if chunk.choices and chunk.choices[0].delta.content:",
      '        print(chunk.choices[0].delta.content, end="", flush=True)',
      "",
    ].join("\n");
  }

  function copy(render) {
    const text = render(requestBody($("prompt").value || "Hello!"));
    const pre = $("snippet");
    pre.textContent = text;
    pre.hidden = false;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
  }

  async function start() {
    if (!Somner.key()) return;
    $("chat-form").addEventListener("submit", send);
    $("prompt").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("chat-form").requestSubmit();
    });
    $("stop-button").addEventListener("click", () => controller && controller.abort());
    $("clear").addEventListener("click", () => {
      history.length = 0;
      $("transcript").replaceChildren();
    });
    $("copy-curl").addEventListener("click", () => copy(curl));
    $("copy-python").addEventListener("click", () => copy(python));
    await attempt(async () => {
      const models = await json("/v1/models");
      $("model").replaceChildren(...models.data.map((m) => el("option", { value: m.id }, m.id)));
      if (!models.data.length) showError("This server has no models configured.");
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
