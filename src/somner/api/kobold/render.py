"""KoboldAI's error shape: `{"detail": {"msg": "...", "type": "..."}}` with the status."""

from __future__ import annotations

from somner.api.errors import json_renderer
from somner.errors import SomnerError


def error_body(error: SomnerError) -> dict[str, dict[str, str]]:
    return {"detail": {"msg": error.message, "type": error.code}}


render = json_renderer(error_body)
