"""Who may call TabbyAPI's routes, and which model "the model" is.

TabbyAPI serves one model at a time; Somner serves several. Where TabbyAPI means "the loaded model", Somner means
the model the request names (Somner's extension `model`), else the loaded model used most recently (that the key
may use). Admin calls need an admin key; as in TabbyAPI, a key without that right is a 401 ("Invalid admin key").
"""

from __future__ import annotations

from starlette.requests import Request

from somner.api.handlers import read_request, services_of
from somner.api.principal import principal_of
from somner.errors import Unauthorized, Unavailable
from somner.models.manager import ModelState
from somner.models.registry import ModelSpec
from somner.services import Services
from somner.wire.tabby import decode, schemas

NO_MODEL = "No models are currently loaded."


def require_admin(request: Request) -> None:
    if not principal_of(request).rights.admin:
        raise Unauthorized("Invalid admin key", code="invalid_admin_key")


def current_model(request: Request, named: str | None = None) -> ModelSpec:
    """The model a TabbyAPI call is about: `named`, else the loaded model used last; 503 when none is loaded."""
    services = services_of(request)
    principal = principal_of(request)
    if named:
        spec = services.manager.resolve(named)
        principal.require_model(spec.id)
        return spec
    loaded = [s for s in services.manager.statuses() if s.state is ModelState.LOADED and principal.rights.may_use(s.id)]
    if not loaded:
        raise Unavailable(NO_MODEL)
    newest = max(loaded, key=lambda s: s.last_used or 0.0)
    return services.registry.get(newest.id)


async def unload_request(request: Request) -> schemas.UnloadRequest:
    """The body of TabbyAPI's unload calls: none (TabbyAPI's), or Somner's `{"model": NAME}`."""
    raw = await read_request(request)
    return decode.parse(schemas.UnloadRequest, raw) if raw.strip() else schemas.UnloadRequest()


async def reload(services: Services, spec: ModelSpec) -> None:
    """Load `spec`'s model with its current settings: a loaded model goes first (its engine has the old ones)."""
    if services.manager.state(spec.id) is ModelState.LOADED:
        await services.manager.unload(spec.id)
    await services.manager.load(spec.id)
