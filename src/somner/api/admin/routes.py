"""Every admin route (all need an admin key)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from somner.api.admin.backends import backend_routes
from somner.api.admin.keys import key_routes
from somner.api.admin.logs import log_routes
from somner.api.admin.models import model_routes
from somner.api.admin.usage import usage_routes


def routes() -> list[BaseRoute]:
    return [*model_routes(), *key_routes(), *usage_routes(), *backend_routes(), *log_routes()]
