"""Constrained output: the GBNF grammar for a request (raw grammar, a JSON schema, or any JSON object)."""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from somner.core import SamplingParams
from somner.errors import BadRequest


def grammar_for(params: SamplingParams) -> str | None:
    """GBNF text for the request's constraint, or None. Raises BadRequest for a schema that cannot be converted."""
    if params.grammar is not None:
        return params.grammar
    if params.json_schema is not None:
        try:
            return str(json_schema_to_gbnf(json.dumps(params.json_schema)))
        except (ValueError, TypeError, KeyError, AssertionError, NotImplementedError, RecursionError) as exc:
            raise BadRequest(
                f"The JSON schema cannot be enforced: {exc}", param="response_format", code="invalid_schema"
            ) from exc
    if params.json_mode:
        return str(JSON_GBNF)
    return None
