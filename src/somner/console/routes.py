"""The console's routes: `/ui/` (sign-in), `/ui/<page>`, `/ui/static/<file>`. Pages are rendered from the
package's templates; static files are read from the package (never from a path the client names)."""

from __future__ import annotations

import functools
import mimetypes
from dataclasses import dataclass
from importlib import resources

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from somner import __version__

# default-src 'self' covers scripts, styles, images, fetches and fonts: nothing from any other host, no inline
# script or style, no eval. frame-ancestors: no page may frame the console (clickjacking).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True, slots=True)
class Page:
    name: str  # the path under /ui and the template's name
    title: str
    admin: bool  # only for admin keys (the API behind it refuses others; the page says so)


PAGES = (
    Page("playground", "Playground", admin=False),
    Page("models", "Models", admin=True),
    Page("keys", "Keys & users", admin=True),
    Page("usage", "Usage", admin=False),  # (a user key sees its own: /usage/series)
    Page("logs", "Logs & health", admin=True),
)
_BY_NAME = {page.name: page for page in PAGES}


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("somner.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


@functools.cache
def _static_names() -> frozenset[str]:
    folder = resources.files("somner.console") / "static"
    return frozenset(entry.name for entry in folder.iterdir() if entry.is_file())


def _not_found(what: str) -> Response:
    return Response(f"No such console {what}.\n", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)


def _page(template: str, page: Page | None) -> Response:
    html = _templates().get_template(template).render(page=page, pages=PAGES, version=__version__)
    return Response(
        html, media_type="text/html; charset=utf-8", headers={**SECURITY_HEADERS, "cache-control": "no-store"}
    )


async def sign_in(request: Request) -> Response:
    return _page("signin.html", None)


async def page(request: Request) -> Response:
    found = _BY_NAME.get(request.path_params["page"])
    if found is None:
        return _not_found("page")
    return _page(f"{found.name}.html", found)


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _static_names():  # (a fixed list: no path from the client ever reaches the file system)
        return _not_found("file")
    data = (resources.files("somner.console") / "static" / name).read_bytes()
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type == "application/javascript":
        media_type += "; charset=utf-8"
    return Response(data, media_type=media_type, headers={**SECURITY_HEADERS, "cache-control": "no-cache"})


def mount() -> Mount:
    """The console under `/ui/` (`/ui` itself is redirected there). A mount, not API routes: the route walk and
    the OpenAPI document cover the API, which these pages only call."""
    return Mount(
        "/ui",
        routes=[
            Route("/", sign_in, methods=["GET"]),
            Route("/static/{name}", static, methods=["GET"]),
            Route("/{page}", page, methods=["GET"]),
        ],
    )
