// A line chart drawn as plain SVG: one line per series over the same buckets, with its y axis and a legend.
"use strict";

const SomnerChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f5d8a", "#c0504d", "#4f9d69", "#d08c2b", "#7b5ea7", "#2b9db0", "#a35d7b", "#6b6b6b"];
  const W = 860;
  const H = 280;
  const PAD = { left: 56, right: 16, top: 12, bottom: 40 };

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const step = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * step >= v) return m * step;
    return 10 * step;
  }

  // labels: the x buckets; series: [{name, values}] (values aligned with labels).
  function render(container, labels, series, unit) {
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img" });
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const x = (i) => PAD.left + (labels.length > 1 ? (i * plotW) / (labels.length - 1) : plotW / 2);
    const y = (v) => PAD.top + plotH - (v / max) * plotH;
    for (let t = 0; t <= 4; t += 1) {
      const value = (max * t) / 4;
      root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value), class: "grid" }));
      root.append(svg("text", { x: PAD.left - 6, y: y(value) + 4, class: "tick", "text-anchor": "end" }, formatTick(value)));
    }
    const every = Math.max(1, Math.ceil(labels.length / 8));
    labels.forEach((label, i) => {
      if (i % every === 0 || i === labels.length - 1) {
        root.append(svg("text", { x: x(i), y: H - PAD.bottom + 16, class: "tick", "text-anchor": "middle" }, shortLabel(label)));
      }
    });
    series.forEach((s, n) => {
      const color = COLORS[n % COLORS.length];
      const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      root.append(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-name": s.name }));
      s.values.forEach((v, i) => {
        if (v > 0) {
          const dot = svg("circle", { cx: x(i), cy: y(v), r: 3, fill: color, class: "point" });
          dot.append(svg("title", {}, `${s.name} · ${labels[i]}: ${v.toLocaleString("en-US")}${unit ? " " + unit : ""}`));
          root.append(dot);
        }
      });
    });
    const legend = document.createElement("div");
    legend.className = "legend";
    series.forEach((s, n) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.className = `swatch c${n % COLORS.length}`;
      item.append(swatch, document.createTextNode(s.name));
      legend.append(item);
    });
    container.replaceChildren(root, legend);
  }

  function formatTick(v) {
    if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function shortLabel(label) {
    return label.length > 10 ? `${label.slice(5, 10)} ${label.slice(11, 16)}` : label.slice(5);
  }

  return { render };
})();
