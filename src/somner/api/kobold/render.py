"""KoboldAI's error shape: `{"detail": {"msg": "...", "type": "..."}}` with the status."""

from __future__ import annotations

from somner.api.errors import json_renderer
from somner.wire.kobold.encode import error_body

__all__ = ["error_body", "render"]

render = json_renderer(error_body)
