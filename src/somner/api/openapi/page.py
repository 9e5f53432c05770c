"""The `/docs` page: one self-contained HTML file (no CDN, no external script or font) that fetches
`/openapi.json` and lists every operation with its parameters, request schema and answers. Text from the document
is put on the page with `textContent` only, never as HTML. The page's Content-Security-Policy allows exactly its
own script and style (by their SHA-256) and fetching from its own origin."""

from __future__ import annotations

import base64
import hashlib

_STYLE = """  :root { color-scheme: light dark; --fg: #1d1f23; --muted: #667; --bg: #fafafa; --card: #fff; --line: #dde;
          --get: #2f7d4f; --post: #2a5db0; --delete: #b03a2e; }
  @media (prefers-color-scheme: dark) {
    :root { --fg: #e6e6e6; --muted: #99a; --bg: #16181c; --card: #1f2228; --line: #30343c; }
  }
  body { margin: 0; font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { padding: 1rem 1.5rem; border-bottom: 1px solid var(--line); background: var(--card); }
  header h1 { margin: 0; font-size: 1.25rem; }
  header p { margin: .25rem 0 0; color: var(--muted); }
  main { max-width: 70rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
  input { width: 100%; box-sizing: border-box; padding: .5rem .75rem; font: inherit; border: 1px solid var(--line);
          border-radius: 6px; background: var(--card); color: var(--fg); }
  h2 { margin: 1.5rem 0 .5rem; font-size: 1.1rem; }
  details { background: var(--card); border: 1px solid var(--line); border-radius: 6px; margin: .35rem 0; }
  summary { cursor: pointer; padding: .45rem .75rem; display: flex; gap: .75rem; align-items: baseline; }
  .method { font: 600 .8rem ui-monospace, monospace; min-width: 4rem; text-transform: uppercase; }
  .get { color: var(--get); } .post { color: var(--post); } .delete { color: var(--delete); }
  .path { font-family: ui-monospace, monospace; }
  .summary { color: var(--muted); }
  .lock { margin-left: auto; color: var(--muted); font-size: .8rem; }
  .body { padding: 0 .75rem .75rem; }
  pre { overflow: auto; background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: .5rem;
        font-size: .8rem; max-height: 28rem; }
  #error { color: var(--delete); }
"""

_SCRIPT = r""""use strict";
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
function resolve(doc, schema, seen) {
  if (!schema || typeof schema !== "object") return schema;
  if (Array.isArray(schema)) return schema.map((item) => resolve(doc, item, seen));
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.split("/").pop();
    if (seen.has(name)) return { $ref: name };
    const next = new Set(seen); next.add(name);
    return resolve(doc, doc.components.schemas[name], next);
  }
  const out = {};
  for (const [key, value] of Object.entries(schema)) out[key] = resolve(doc, value, seen);
  return out;
}
function block(title, value) {
  const wrap = el("div");
  wrap.append(el("h4", "", title), el("pre", "", JSON.stringify(value, null, 2)));
  return wrap;
}
function render(doc) {
  document.getElementById("info").textContent =
    doc.info.title + " " + doc.info.version + ": " + doc.info.description;
  const ops = document.getElementById("ops");
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["Other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  for (const [tag, list] of byTag) {
    const section = el("section");
    section.append(el("h2", "", tag));
    for (const [method, path, op] of list) {
      const details = el("details");
      details.dataset.search = [tag, method, path, op.summary].join(" ").toLowerCase();
      const summary = el("summary");
      summary.append(el("span", "method " + method, method), el("span", "path", path),
                     el("span", "summary", op.summary || ""),
                     el("span", "lock", Array.isArray(op.security) && op.security.length === 0 ? "public" : "key"));
      details.append(summary);
      details.addEventListener("toggle", () => {
        if (!details.open || details.dataset.filled) return;
        details.dataset.filled = "1";
        const body = el("div", "body");
        if (op.parameters) body.append(block("Parameters", op.parameters));
        if (op.requestBody) body.append(block("Request body", resolve(doc, op.requestBody, new Set())));
        body.append(block("Responses", resolve(doc, op.responses, new Set())));
        details.append(body);
      });
      section.append(details);
    }
    ops.append(section);
  }
}
document.getElementById("filter").addEventListener("input", (event) => {
  const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const node of document.querySelectorAll("details")) {
    node.hidden = !words.every((word) => node.dataset.search.includes(word));
  }
});
fetch("openapi.json")
  .then((reply) => { if (!reply.ok) throw new Error("HTTP " + reply.status); return reply.json(); })
  .then(render)
  .catch((error) => { document.getElementById("error").textContent = "Cannot load openapi.json: " + error; });
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


DOCS_PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Somner API</title>
<style>"""
    + _STYLE
    + """</style>
</head>
<body>
<header><h1>Somner API</h1><p id="info">Loading /openapi.json …</p></header>
<main>
  <input id="filter" type="search" placeholder="Filter by API, path, method or summary" aria-label="Filter">
  <p id="error"></p>
  <div id="ops"></div>
</main>
<script>"""
    + _SCRIPT
    + """</script>
</body>
</html>
"""
)

CSP = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; connect-src 'self'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
