"""`GET /openapi.json` (the document) and `GET /docs` (a page that renders it), both public: see the README's
"OpenAPI document" section for why. The document is built on first use from the app's own route table and kept
for the life of the app (`app.state`), so it always matches what this server serves."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.guard import public_paths
from somner.api.openapi.document import build_document
from somner.api.openapi.page import CSP, DOCS_PAGE


async def openapi_json(request: Request) -> Response:
    app = request.app
    body: bytes | None = getattr(app.state, "openapi_json", None)
    if body is None:
        settings = app.state.services.settings
        body = orjson.dumps(build_document(app.routes, public_paths(settings)))
        app.state.openapi_json = body
    return Response(body, media_type="application/json")


async def docs(request: Request) -> Response:
    return Response(
        DOCS_PAGE,
        media_type="text/html; charset=utf-8",
        headers={
            # The page is self-contained: its own script and style, nothing fetched but the document itself.
            "content-security-policy": CSP,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        },
    )


def routes() -> list[BaseRoute]:
    return [Route("/openapi.json", openapi_json, methods=["GET"]), Route("/docs", docs, methods=["GET"])]
