"""The scaling curve of `vs_llama_server.py --scaling` as a plain SVG (no plotting library needed): output tokens/s
and time to first token (p50) against concurrency, Somner and llama-server, medians over rounds."""

from __future__ import annotations

import math
import statistics
from typing import Any

WIDTH, HEIGHT = 420, 300  # one panel
LEFT, RIGHT, TOP, BOTTOM = 62, 24, 40, 46
COLOURS = {"llama-server": "#d9822b", "somner": "#2b6cb0"}


def _median(reports: list[dict[str, Any]], key: str, sub: str | None) -> float | None:
    values = [r[key][sub] if sub else r[key] for r in reports]
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _nice_top(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * step >= value:
            return factor * step
    return 10 * step


def _panel(x0: int, title: str, series: dict[str, list[tuple[int, float]]], levels: list[int], unit: str) -> list[str]:
    top = _nice_top(max((v for points in series.values() for _, v in points), default=1.0) * 1.05)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(math.log2(levels[-1]) - math.log2(levels[0]), 1.0)

    def x(c: int) -> float:
        return x0 + LEFT + (math.log2(c) - math.log2(levels[0])) / span * inner_w

    def y(v: float) -> float:
        return TOP + inner_h - v / top * inner_h

    out = [f'<text x="{x0 + WIDTH / 2}" y="22" text-anchor="middle" font-weight="bold">{title}</text>']
    for i in range(5):  # horizontal grid and its labels
        value = top * i / 4
        out.append(
            f'<line x1="{x0 + LEFT}" x2="{x0 + WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{x0 + LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
    for c in levels:
        out.append(f'<text x="{x(c):.1f}" y="{TOP + inner_h + 18}" text-anchor="middle">{c}</text>')
    out.append(
        f'<text x="{x0 + LEFT + inner_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">concurrent requests (= slots)'
        "</text>"
    )
    out.append(
        f'<text transform="translate({x0 + 14},{TOP + inner_h / 2}) rotate(-90)" text-anchor="middle">{unit}</text>'
    )
    for name, points in series.items():
        path = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in points)
        out.append(f'<polyline fill="none" stroke="{COLOURS[name]}" stroke-width="2" points="{path}"/>')
        out += [f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="3" fill="{COLOURS[name]}"/>' for c, v in points]
    return out


def svg(reports: dict[str, dict[int, list[dict[str, Any]]]], levels: list[int], caption: str) -> str:
    """Two panels (tokens/s, TTFT p50) with a legend; `reports` as vs_llama_server.py collects them."""
    levels = sorted(levels)

    def series(key: str, sub: str | None) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        for name in ("llama-server", "somner"):
            points = [(c, _median(reports[name].get(c, []), key, sub)) for c in levels]
            out[name] = [(c, v) for c, v in points if v is not None]
        return out

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * WIDTH}" height="{HEIGHT + 24}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{2 * WIDTH}" height="{HEIGHT + 24}" fill="white"/>',
        *_panel(0, "Output tokens/s (higher is better)", series("output_tokens_per_s", None), levels, "tokens/s"),
        *_panel(WIDTH, "Time to first token, p50 (lower is better)", series("ttft_ms", "p50"), levels, "ms"),
    ]
    for i, (name, colour) in enumerate(COLOURS.items()):
        label = "Somner" if name == "somner" else name
        x = LEFT + i * 130
        parts.append(f'<rect x="{x}" y="{HEIGHT + 6}" width="14" height="4" fill="{colour}"/>')
        parts.append(f'<text x="{x + 20}" y="{HEIGHT + 12}">{label}</text>')
    parts.append(f'<text x="{2 * WIDTH - 8}" y="{HEIGHT + 12}" text-anchor="end" fill="#666">{caption}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
