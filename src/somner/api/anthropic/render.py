"""Anthropic's error envelope, `{"type": "error", "error": {"type": ..., "message": ...}}`, as a response with
the error's status (the status → type table is `wire.anthropic.encode.error_type`)."""

from __future__ import annotations

from somner.api.errors import json_renderer
from somner.wire.anthropic.encode import error_body, error_type

__all__ = ["error_body", "error_type", "render"]

render = json_renderer(error_body)
