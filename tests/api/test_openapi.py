"""The OpenAPI document: every route of the app has an entry (a new route without one fails here), the schemas
are the ones the routes validate with, and `/openapi.json` and `/docs` are served without a key."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from pydantic import ValidationError
from schemathesis.core.result import Ok

from somner.api.guard import is_console, public_paths
from somner.api.openapi.catalog import operations
from somner.api.openapi.document import build_document, route_methods
from somner.app import create_app
from somner.settings import Settings
from somner.wire.openai import schemas as openai_schemas
from tests.api.conftest import running
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


def _app_routes(**settings: Any) -> tuple[Settings, list[Any]]:
    config = Settings(data_dir=Path(tempfile.mkdtemp(prefix="somner-openapi-")), **settings)
    return config, list(create_app(config).routes)


def test_every_route_of_the_app_has_a_schema_entry() -> None:
    """A route added without its line in `api/openapi/catalog.py` fails here, named."""
    _, routes = _app_routes()
    listed = {(op.method, op.path) for op in operations()}
    missing = sorted(route_methods(routes) - listed)
    assert not missing, f"routes without an OpenAPI entry (add them to somner/api/openapi/catalog.py): {missing}"


def test_every_catalog_entry_is_a_route_of_the_app() -> None:
    _, routes = _app_routes()
    stale = sorted({(op.method, op.path) for op in operations()} - route_methods(routes))
    assert not stale, f"catalog entries for routes that do not exist: {stale}"


def test_catalog_public_flags_match_the_guard() -> None:
    config, _ = _app_routes()
    documented = {op.path for op in operations() if op.public}
    assert documented == set(public_paths(config)) | {op.path for op in operations() if is_console(op.path)}


def test_the_document_covers_only_enabled_dialects() -> None:
    config, routes = _app_routes(api_servers=["openai"])
    doc = build_document(routes, public_paths(config))
    assert "/v1/chat/completions" in doc["paths"]
    assert "/api/chat" not in doc["paths"]
    assert "/v1/messages" not in doc["paths"]
    assert "/admin/keys" in doc["paths"]  # (admin and health are always served)


def test_document_is_openapi_3_1_with_valid_json_schemas() -> None:
    config, routes = _app_routes()
    doc = build_document(routes, public_paths(config))
    assert doc["openapi"] == "3.1.0"
    for name, schema in doc["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{name}: {exc.message}")
    loaded = schemathesis.openapi.from_dict(doc)
    count = sum(1 for result in loaded.get_all_operations() if isinstance(result, Ok))
    assert count == sum(len(item) for item in doc["paths"].values())
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    assert doc["paths"]["/ping"]["get"]["security"] == []
    assert "security" not in chat  # the document's default: a key


def test_request_schema_is_the_one_the_route_validates_with() -> None:
    """The document's schema and the route's model agree on what they accept and refuse."""
    config, routes = _app_routes()
    doc = build_document(routes, public_paths(config))
    schema = {"$ref": "#/components/schemas/ChatCompletionRequest", "components": doc["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    good = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    bad = [
        {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "4"},
        {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "temperature": 99},
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2**70},
    ]
    openai_schemas.ChatCompletionRequest.model_validate(good)
    assert validator.is_valid(good)
    for body in bad:
        with pytest.raises(ValidationError):
            openai_schemas.ChatCompletionRequest.model_validate(body)
        assert not validator.is_valid(body), body


async def test_openapi_json_and_docs_are_served_without_a_key(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (_, client):
        anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://localhost")
        reply = await anonymous.get("/openapi.json")
        assert reply.status_code == 200
        doc = reply.json()
        assert doc["openapi"] == "3.1.0"
        assert "/v1/messages" in doc["paths"]
        assert (await anonymous.get("/openapi.json")).content == reply.content  # built once, served as built
        page = await anonymous.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "openapi.json" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere
        # A key is still needed everywhere else.
        assert (await anonymous.get("/v1/models")).status_code == 401
