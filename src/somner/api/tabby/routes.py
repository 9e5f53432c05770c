"""Every TabbyAPI route."""

from __future__ import annotations

from starlette.routing import BaseRoute

from somner.api.tabby import adapters, models, overrides, templates, tokens


def routes() -> list[BaseRoute]:
    return [*models.routes(), *adapters.routes(), *templates.routes(), *overrides.routes(), *tokens.routes()]
