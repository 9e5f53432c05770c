"""Which dialect a path belongs to, for errors raised before a route runs (auth, limits, unknown routes)."""

from __future__ import annotations

from somner.api.errors import Renderer
from somner.api.openai.render import render as render_openai


def renderer_for(path: str) -> Renderer:
    return render_openai
