"""OpenAI's error envelope, as a response."""

from __future__ import annotations

from somner.api.errors import json_renderer
from somner.wire.openai import encode

render = json_renderer(encode.error_body)
