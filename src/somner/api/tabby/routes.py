"""Every TabbyAPI route."""

from __future__ import annotations

from starlette.routing import BaseRoute

from somner.api.tabby import adapters, models, templates, tokens


def routes() -> list[BaseRoute]:
    return [*models.routes(), *adapters.routes(), *templates.routes(), *tokens.routes()]
