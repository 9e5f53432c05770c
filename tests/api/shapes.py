"""Each dialect's error shape, asserted the same way everywhere."""

from __future__ import annotations

from typing import Any

import httpx

from somner.api.dialects import dialect_of


def assert_dialect_error(response: httpx.Response, dialect: str, status: int) -> str:
    """The response is an error of `status` in `dialect`'s shape; returns its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: Any = response.json()
    if dialect == "openai":
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        return str(body["error"]["message"])
    if dialect == "ollama":
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return str(body["error"])
    if dialect == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        return str(body["error"]["message"])
    if dialect == "kobold":
        assert set(body) == {"detail"} and set(body["detail"]) == {"msg", "type"}, body
        return str(body["detail"]["msg"])
    if dialect == "tabby":
        assert set(body) == {"detail"} and isinstance(body["detail"], str), body
        return str(body["detail"])
    raise AssertionError(f"unknown dialect {dialect}")


def assert_path_error(response: httpx.Response, status: int) -> str:
    """An error in the shape of the dialect the request's path belongs to."""
    return assert_dialect_error(response, dialect_of(response.request.url.path), status)
