"""TabbyAPI's error shape (FastAPI's): `{"detail": "..."}` with the status."""

from __future__ import annotations

from somner.api.errors import guarded, json_renderer
from somner.wire.tabby.encode import error_body

render = json_renderer(error_body)
tabby_endpoint = guarded(render)
