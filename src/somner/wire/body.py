"""Request bodies of every dialect: the pydantic base classes, and parsing with errors that name the parameter.

Tolerant of clients (unknown fields are kept aside and ignored, logged at debug level), strict about types: a
string where a number belongs is a 400 naming the parameter, as OpenAI answers. Numbers must be finite: JSON has
no infinity, and the `Infinity`, `NaN` or 1e999 some encoders write would reach engines as nonsense. Dialects
render the resulting `BadRequest` in their own shape.
"""

from __future__ import annotations

import logging
import re
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from somner.errors import BadRequest

log = logging.getLogger(__name__)


class WireObject(BaseModel):
    """A nested object of a request body: unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True, allow_inf_nan=False)


class RequestBody(BaseModel):
    """A request body: unknown fields kept aside (`model_extra`) and ignored."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True, allow_inf_nan=False)


RequestT = TypeVar("RequestT", bound=BaseModel)
_TYPE_TAG = re.compile(r"[^a-z0-9_]|^(str|int|float|bool|list|dict|none)$")


def _param(loc: tuple[int | str, ...]) -> str | None:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(str(item))
        elif _TYPE_TAG.search(item):
            break  # a union member tag, not a field
        else:
            parts.append(item)
    return ".".join(parts) or None


def validation_error(exc: ValidationError) -> BadRequest:
    """The first problem of a pydantic error as OpenAI words it, naming the parameter."""
    first = exc.errors(include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        return BadRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        )
    param = _param(tuple(first["loc"]))
    if kind == "model_type" and param is None:
        return BadRequest("The request body must be a JSON object.", code="invalid_type")
    if kind == "missing":
        return BadRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    code = "invalid_type" if kind.endswith("_type") or kind.startswith("union") else "invalid_value"
    return BadRequest(f"Invalid value for '{param}': {first['msg']}.", param=param, code=code)


def parse(model: type[RequestT], body: bytes | str) -> RequestT:
    """Validate a request body; BadRequest (400) naming the parameter otherwise."""
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if parsed.model_extra and log.isEnabledFor(logging.DEBUG):
        log.debug("ignoring unknown fields: %s", ", ".join(sorted(parsed.model_extra)))
    return parsed
