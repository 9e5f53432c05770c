"""Which dialect a path belongs to, for errors raised before a route runs (auth, limits, unknown routes)."""

from __future__ import annotations

from somner.api.anthropic.render import render as render_anthropic
from somner.api.errors import Renderer
from somner.api.kobold.render import render as render_kobold
from somner.api.ollama.render import render as render_ollama
from somner.api.openai.render import render as render_openai


def dialect_of(path: str) -> str:
    if path.startswith(("/api/v1/", "/api/extra/")) or path in ("/api/v1", "/api/extra"):
        return "kobold"
    if path == "/" or path.startswith("/api/") or path == "/api":
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


_RENDERERS: dict[str, Renderer] = {
    "openai": render_openai,
    "ollama": render_ollama,
    "kobold": render_kobold,
    "anthropic": render_anthropic,
}


def renderer_for(path: str) -> Renderer:
    return _RENDERERS[dialect_of(path)]
