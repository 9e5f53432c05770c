// The console's shared part: the key in session storage, calls to the server's API with it, errors shown in
// the page, and a small DOM builder (text is always set as text, never parsed as HTML).
"use strict";

const Somner = (() => {
  const KEY = "somner.apiKey";
  const ROLE = "somner.role";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const key = () => sessionStorage.getItem(KEY);
  const role = () => sessionStorage.getItem(ROLE) || "user";

  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    const box = document.getElementById("error");
    box.textContent = "";
    box.hidden = true;
  }

  // The message of an API error, whatever the dialect's envelope: OpenAI/Anthropic {"error": {"message"}},
  // Ollama {"error": "..."}, Kobold {"detail": {"msg"}}; else the status line.
  async function errorMessage(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      const error = body.error !== undefined ? body.error : body.detail;
      if (typeof error === "string") return error;
      if (error && typeof error.message === "string") return error.message;
      if (error && typeof error.msg === "string") return error.msg;
    } catch (_) {
      // not JSON: fall through
    }
    return `${response.status} ${response.statusText}${text ? ": " + text.slice(0, 300) : ""}`;
  }

  function headers(extra) {
    const all = { ...(extra || {}) };
    const secret = key();
    if (secret) all.authorization = `Bearer ${secret}`;
    return all;
  }

  // fetch() with the key; an error answer becomes an ApiError carrying the API's own message.
  async function api(path, options = {}) {
    const init = { ...options, headers: headers(options.headers), credentials: "omit", cache: "no-store" };
    if (options.json !== undefined) {
      init.body = JSON.stringify(options.json);
      init.headers["content-type"] = "application/json";
      delete init.json;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, `The server could not be reached: ${err.message}`);
    }
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
    return response;
  }

  async function json(path, options) {
    return (await api(path, options)).json();
  }

  // Run an action; any failure is shown in the page (the API's message), never left as a blank screen. A
  // person's action clears the last error first; a background refresh (clear = false) leaves it shown.
  async function attempt(work, clear = true) {
    try {
      if (clear) clearError();
      return await work();
    } catch (err) {
      if (err.name === "AbortError") return undefined;
      showError(err instanceof ApiError ? err.message : `Something went wrong in the page: ${err.message}`);
      return undefined;
    }
  }

  // The body cut at each `delimiter` as it arrives; a last piece without one is handed on at the end.
  async function readPieces(response, delimiter, onPiece) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf(delimiter)) >= 0) {
        onPiece(buffer.slice(0, cut));
        buffer = buffer.slice(cut + delimiter.length);
      }
    }
    if (buffer.trim()) onPiece(buffer);
  }

  // Server-sent events: the data of each event.
  function readEvents(response, onData) {
    return readPieces(response, "\n\n", (block) => {
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
      if (data.length) onData(data.join("\n"));
    });
  }

  // Newline-delimited JSON (Ollama's streams): each line.
  function readLines(response, onLine) {
    return readPieces(response, "\n", (line) => {
      if (line.trim()) onLine(line.trim());
    });
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fill(tbody, rows, empty) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 12, class: "hint" }, empty))]));
  }

  const fmt = {
    time(unix) {
      return unix ? new Date(unix * 1000).toLocaleTimeString() : "—";
    },
    bytes(n) {
      if (!n) return "—";
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      while (n >= 1024 && i < units.length - 1) {
        n /= 1024;
        i += 1;
      }
      return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
    },
    ms(v) {
      return v === null || v === undefined ? "—" : `${Math.round(v)} ms`;
    },
    num(v) {
      return v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US");
    },
  };

  async function signIn(event) {
    event.preventDefault();
    const secret = document.getElementById("api-key").value.trim();
    if (!secret) return;
    sessionStorage.setItem(KEY, secret);
    await attempt(async () => {
      try {
        await api("/v1/models");
      } catch (err) {
        sessionStorage.removeItem(KEY);
        throw err;
      }
      // Which pages to offer: the admin API answers admin keys only (it stays the judge of every call).
      let admin = false;
      try {
        await api("/admin/models");
        admin = true;
      } catch (err) {
        if (!(err instanceof ApiError) || (err.status !== 403 && err.status !== 401)) throw err;
      }
      sessionStorage.setItem(ROLE, admin ? "admin" : "user");
      location.assign(admin ? "/ui/models" : "/ui/playground");
    });
  }

  function start() {
    const page = document.body.dataset.page;
    if (page === "signin") {
      document.getElementById("signin-form").addEventListener("submit", signIn);
      return;
    }
    if (!key()) {
      location.replace("/ui/");
      return;
    }
    document.getElementById("who").textContent = role() === "admin" ? "admin key" : "user key";
    document.getElementById("sign-out").addEventListener("click", () => {
      sessionStorage.clear();
      location.assign("/ui/");
    });
    if (role() !== "admin") {
      for (const link of document.querySelectorAll("nav a.admin-only")) link.hidden = true;
    }
  }

  document.addEventListener("DOMContentLoaded", start);

  return { api, json, attempt, readEvents, readLines, el, fill, fmt, key, role, showError, clearError, ApiError };
})();
