"""Which dialect a path belongs to, for errors raised before a route runs (auth, limits, unknown routes)."""

from __future__ import annotations

from somner.api.anthropic.render import render as render_anthropic
from somner.api.errors import Renderer
from somner.api.kobold.render import render as render_kobold
from somner.api.ollama.render import render as render_ollama
from somner.api.openai.render import render as render_openai
from somner.api.tabby.render import render as render_tabby

# TabbyAPI's own routes (its completions are OpenAI's): paths and the prefixes of their families.
_TABBY_PATHS = frozenset({"/v1/model", "/v1/loras", "/v1/lora", "/v1/templates", "/v1/auth/permission", "/v1/health"})
_TABBY_PREFIXES = ("/v1/model/", "/v1/lora/", "/v1/template/", "/v1/sampling/", "/v1/token/")


def dialect_of(path: str) -> str:
    if path.startswith(("/api/v1/", "/api/extra/", "/api/latest/")) or path in ("/api/v1", "/api/extra", "/api/latest"):
        return "kobold"
    if path == "/" or path.startswith("/api/") or path == "/api":
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path in _TABBY_PATHS or path.startswith(_TABBY_PREFIXES):
        return "tabby"
    return "openai"


_RENDERERS: dict[str, Renderer] = {
    "openai": render_openai,
    "ollama": render_ollama,
    "kobold": render_kobold,
    "anthropic": render_anthropic,
    "tabby": render_tabby,
}


def renderer_for(path: str) -> Renderer:
    return _RENDERERS[dialect_of(path)]
