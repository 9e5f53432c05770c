"""The caller of the current request, as the guard middleware established it."""

from __future__ import annotations

from starlette.requests import Request

from somner.gateway.keys import ADMIN, ANONYMOUS, Principal


def principal_of(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else ANONYMOUS


def lane_of(request: Request) -> str:
    """The fairness unit of the queue: the key, or the client's address when auth is off."""
    principal = principal_of(request)
    if principal.key_id is not None:
        return principal.key_id
    client = request.client
    return f"addr:{client.host}" if client is not None else "anonymous"


def require_admin(request: Request) -> Principal:
    principal = principal_of(request)
    principal.require(ADMIN)
    return principal
