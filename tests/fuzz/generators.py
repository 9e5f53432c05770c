"""Hypothesis strategies for what a schema cannot say: bodies that are not quite JSON, not quite UTF-8, nested
too deep, with numbers too large or not numbers at all, fields of every wrong type, encoded, cut short, or sent
with too many headers.

Each dialect has a few routes with a small valid body each (cheap: a 2-token answer). A generated request starts
from one of them and breaks it one way (`KINDS`); a small share is left valid, so the engine is reached too.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.fuzz.budget import FUZZ_MODEL

_CHAT = [{"role": "user", "content": "hi"}]

# (path, a valid body) per dialect: the routes each dialect's generated requests go to.
ROUTES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "openai": [
        ("/v1/chat/completions", {"model": FUZZ_MODEL, "messages": _CHAT, "max_tokens": 2, "temperature": 0.5}),
        ("/v1/completions", {"model": FUZZ_MODEL, "prompt": "hi", "max_tokens": 2, "stop": ["\n"], "seed": 1}),
        ("/v1/embeddings", {"model": FUZZ_MODEL, "input": "hi"}),
        ("/v1/responses", {"model": FUZZ_MODEL, "input": "hi", "max_output_tokens": 2}),
        ("/tokenize", {"model": FUZZ_MODEL, "content": "hi"}),
        ("/detokenize", {"model": FUZZ_MODEL, "tokens": [1, 2]}),
    ],
    "anthropic": [
        ("/v1/messages", {"model": FUZZ_MODEL, "max_tokens": 2, "messages": _CHAT, "top_k": 5}),
        ("/v1/messages", {"model": FUZZ_MODEL, "max_tokens": 2, "messages": _CHAT, "stream": True, "system": "s"}),
        ("/v1/messages/count_tokens", {"model": FUZZ_MODEL, "messages": _CHAT}),
    ],
    "ollama": [
        ("/api/chat", {"model": FUZZ_MODEL, "messages": _CHAT, "stream": False, "options": {"num_predict": 2}}),
        ("/api/generate", {"model": FUZZ_MODEL, "prompt": "hi", "options": {"num_predict": 2, "seed": 3}}),
        ("/api/embed", {"model": FUZZ_MODEL, "input": ["hi"]}),
        ("/api/embeddings", {"model": FUZZ_MODEL, "prompt": "hi"}),
        ("/api/show", {"model": FUZZ_MODEL}),
    ],
    "kobold": [
        ("/api/v1/generate", {"prompt": "hi", "max_length": 2, "temperature": 0.7, "top_k": 10}),
        ("/api/extra/generate/stream", {"prompt": "hi", "max_length": 2, "sampler_seed": 5}),
        ("/api/extra/tokencount", {"prompt": "hi"}),
        ("/api/extra/detokenize", {"tokens": [1, 2]}),
        ("/api/extra/abort", {"genkey": "k"}),
        ("/api/extra/generate/check", {"genkey": "k"}),
    ],
    "tabby": [
        ("/v1/token/encode", {"model": FUZZ_MODEL, "text": "hi"}),
        ("/v1/token/decode", {"model": FUZZ_MODEL, "tokens": [1, 2]}),
        ("/v1/sampling/override/switch", {"preset": "none-such"}),
        ("/v1/template/switch", {"name": "none-such"}),
        ("/v1/lora/load", {"loras": [{"name": "none-such", "scaling": 1.0}]}),
    ],
}

HUGE_NUMBERS = [2**63, 2**64, -(2**63) - 1, 2**70, -(2**70), 10**30, 2**1000, 1e308, -1e308, 5e-324]
# Number tokens no JSON allows (some encoders write them anyway).
BAD_NUMBER_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"0x10", b"01", b"1.", b".5", b"+1"]
INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82"]
KINDS = [
    "wrong_type",
    "extreme_value",
    "missing_field",
    "unknown_fields",
    "not_an_object",
    "truncated",
    "invalid_utf8",
    "deep_nesting",
    "bad_number",
    "duplicate_keys",
    "garbage_around",
    "encoded",
    "bad_encoding",
    "many_headers",
    "huge_header",
    "cut_mid_body",
]
# Kinds that break the request before its model matters, or not at all, name a model that does not exist: the
# body is validated all the same, then answered with a cheap 404. The kinds that try values on the engine name
# the real model one time in four (the rest are validated, then 404), to keep the engine's share of the time small.
_DECOY_KINDS = frozenset(KINDS) - {"wrong_type", "extreme_value", "missing_field", "bad_number"}
DECOY_MODEL = "fuzz-none"


@dataclass
class Generated:
    """One generated request: where to, what bytes, which extra headers; `cut` sends part of it and hangs up."""

    kind: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    cut: bool = False


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    )


def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6,
    )


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field and item of a body, as key paths (the body itself excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def _get(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


def _set(body: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(body, path[:-1])[path[-1]] = value


def _copy(body: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(body))
    return copied


def _dumps(body: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity come out as bare words, which orjson would not write."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def generated_request(draw: st.DrawFn, dialect: str) -> Generated:
    path, valid = draw(st.sampled_from(ROUTES[dialect]))
    # About 1 in 100 is left valid (the engine answers it); every other one breaks the request one way.
    kind = "valid" if draw(st.integers(min_value=0, max_value=99)) == 0 else draw(st.sampled_from(KINDS))
    body = _copy(valid)
    if kind in _DECOY_KINDS or (kind != "valid" and draw(st.integers(min_value=0, max_value=3)) > 0):
        body["model"] = DECOY_MODEL
    raw = orjson.dumps(body)
    fields = _paths(body)
    if kind == "wrong_type":
        where = draw(st.sampled_from(fields))
        original = _kind_of(_get(body, where))
        _set(body, where, draw(json_values().filter(lambda v: _kind_of(v) != original)))
        return Generated(kind, path, _dumps(body))
    if kind == "extreme_value":
        where = draw(st.sampled_from(fields))
        extreme = st.one_of(
            st.sampled_from(HUGE_NUMBERS),
            st.sampled_from([float("nan"), float("inf"), float("-inf")]),
            st.sampled_from(["", " ", "\x00", "\ud800", "x" * 20_000, "x" * 300_000]),
            st.sampled_from([[], {}, [[]] * 1000, list(range(5000))]),
            st.integers(min_value=-(2**31), max_value=-1),
        )
        _set(body, where, draw(extreme))
        return Generated(kind, path, _dumps(body))
    if kind == "missing_field":
        where = draw(st.sampled_from(fields))
        container = _get(body, where[:-1])
        del container[where[-1]]
        return Generated(kind, path, _dumps(body))
    if kind == "unknown_fields":
        extra = draw(st.dictionaries(st.text(min_size=1, max_size=10), json_values(), min_size=1, max_size=4))
        return Generated(kind, path, _dumps({**extra, **body} if draw(st.booleans()) else {**body, **extra}))
    if kind == "not_an_object":
        return Generated(kind, path, _dumps(draw(st.one_of(_scalars(), st.lists(json_values(), max_size=3)))))
    if kind == "truncated":
        return Generated(kind, path, raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))])
    if kind == "invalid_utf8":
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        return Generated(kind, path, raw[:at] + draw(st.sampled_from(INVALID_UTF8)) + raw[at:])
    if kind == "deep_nesting":
        depth = draw(st.sampled_from([64, 512, 5_000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        nested = opener * depth + b"1" + closer * depth
        where = draw(st.sampled_from([k for k in body if isinstance(k, str)]))
        spliced = raw.replace(orjson.dumps(where) + b":", orjson.dumps(where) + b":" + nested + b',"_":', 1)
        return Generated(kind, path, spliced if draw(st.booleans()) else nested)
    if kind == "bad_number":
        token = draw(st.sampled_from(BAD_NUMBER_TOKENS))
        numeric = [w for w in fields if isinstance(_get(body, w), int | float) and not isinstance(_get(body, w), bool)]
        target = draw(st.sampled_from(numeric)) if numeric else draw(st.sampled_from(fields))
        _set(body, target, "\x00MARK\x00")
        return Generated(kind, path, _dumps(body).replace(b'"\\u0000MARK\\u0000"', token))
    if kind == "duplicate_keys":
        key = draw(st.sampled_from(list(body)))
        duplicate = _dumps({key: draw(json_values())})[1:-1]
        return Generated(kind, path, raw[:-1] + b"," + duplicate + b"}")
    if kind == "garbage_around":
        before = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"  \n", b"\x00", b")]}'\n"]))
        after = draw(st.sampled_from([b"", b"x", b"{}", b"\x00", b"\n\n", b"]"]))
        return Generated(kind, path, before + raw + after if before or after else b"")
    if kind == "encoded":
        coding = draw(st.sampled_from(["gzip", "deflate"]))
        payload = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
        if draw(st.booleans()):  # a bomb: small on the wire, past the body limit once decoded
            bomb = b'{"prompt": "' + b"a" * (512 * 1024) + b'"}'
            payload = gzip.compress(bomb) if coding == "gzip" else zlib.compress(bomb)
        return Generated(kind, path, payload, {"content-encoding": coding})
    if kind == "bad_encoding":
        coding, payload = draw(
            st.sampled_from(
                [
                    ("gzip", raw),
                    ("deflate", raw),
                    ("gzip", gzip.compress(raw)[:-6]),
                    ("br", raw),
                    ("zstd", raw),
                    ("gzip, br", gzip.compress(raw)),
                    ("gzip", b""),
                ]
            )
        )
        return Generated(kind, path, payload, {"content-encoding": coding})
    if kind == "many_headers":
        count = draw(st.sampled_from([60, 120, 400]))
        return Generated(kind, path, raw, {f"x-fuzz-{i}": "v" for i in range(count)})
    if kind == "huge_header":
        size = draw(st.sampled_from([8_000, 20_000, 200_000]))
        return Generated(kind, path, raw, {"x-fuzz": "v" * size})
    if kind == "cut_mid_body":
        return Generated(kind, path, raw, cut=True)
    return Generated(kind, path, raw)


# A value of each JSON type; `every_wrong_type` puts each in each field whose type differs.
_ONE_OF_EACH_TYPE: list[Any] = [None, True, 2**70, -1.5, "x", [], {"a": 1}]


def every_wrong_type(dialect: str) -> list[Generated]:
    """Every field of every route's valid body, with a value of every other JSON type (the random generators
    reach most of these; this list reaches all of them, every run). Only the integer past 64 bits goes to the real
    model (a value that passes validation there is the one that could still break the engine hop); the others
    name the decoy model, so what they do not break ends in a cheap 404."""
    generated: list[Generated] = []
    for path, valid in ROUTES[dialect]:
        for where in _paths(valid):
            original = _kind_of(_get(valid, where))
            for value in _ONE_OF_EACH_TYPE:
                if _kind_of(value) == original:
                    continue
                body = _copy(valid)
                if value != 2**70:
                    body["model"] = DECOY_MODEL
                _set(body, where, value)
                generated.append(Generated("every_wrong_type", path, _dumps(body)))
    return generated
