"""`keep_alive` on every dialect: Ollama's semantics (a duration or seconds; 0 unloads the model when the request
ends; negative keeps it loaded), from the body field (Ollama, OpenAI) or the `X-Somner-Keep-Alive` header (every
dialect; the only way on Anthropic and Kobold, whose bodies have no such field).

With 0 the model's engine stops as soon as the request's lease is released: the manager's reaper wakes on the
new expiry at once (Ollama's routes that answer in one piece even wait for it before answering)."""

from __future__ import annotations

from starlette.requests import Request

from somner.durations import parse_duration
from somner.errors import BadRequest

HEADER = "x-somner-keep-alive"


def keep_alive(request: Request, body_value: float | str | None) -> float | None:
    """Seconds, or None for the model's ttl. The body wins over the header."""
    value: float | str | None = body_value
    param = "keep_alive"
    if value is None:
        value = request.headers.get(HEADER)
        param = "X-Somner-Keep-Alive"
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise BadRequest(
            f"Invalid value for '{param}': use seconds or a duration such as '5m'; 0 unloads, negative keeps.",
            param=param,
        ) from None
