"""Anthropic's error envelope: `{"type": "error", "error": {"type": ..., "message": ...}}` with the status."""

from __future__ import annotations

from somner.api.errors import json_renderer
from somner.errors import SomnerError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(error: SomnerError) -> dict[str, object]:
    return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}


render = json_renderer(error_body)
