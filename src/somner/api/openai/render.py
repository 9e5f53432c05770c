"""OpenAI's error envelope, as a response."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from somner.errors import SomnerError
from somner.wire.openai import encode


def render(error: SomnerError) -> Response:
    return Response(
        orjson.dumps(encode.error_body(error)),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )
