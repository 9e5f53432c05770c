"""Ollama's error shape: `{"error": "..."}` with the status."""

from __future__ import annotations

from somner.api.errors import json_renderer
from somner.errors import SomnerError


def error_body(error: SomnerError) -> dict[str, str]:
    return {"error": error.message}


render = json_renderer(error_body)
