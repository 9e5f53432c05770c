"""Ollama model names → registry names, for every Ollama route.

Ollama names carry a tag, and a bare name means `name:latest`. Somner ids and aliases may contain ':' themselves
(`qwen:7b` can be an id), so a name is first looked up exactly; then `name:latest` and `name` stand for each other.
"""

from __future__ import annotations

from collections.abc import Iterator

from somner.models.registry import ModelRegistry, ModelSpec

LATEST = ":latest"


def _candidates(name: str) -> Iterator[str]:
    yield name
    if name.endswith(LATEST):
        yield name[: -len(LATEST)]
    elif ":" not in name:
        yield name + LATEST


def registered_name(registry: ModelRegistry, name: str) -> str | None:
    """The id or alias, exactly as the registry knows it, that `name` refers to; None if none."""
    for candidate in _candidates(name):
        if registry.find(candidate) is not None:
            return candidate
    return None


def find(registry: ModelRegistry, name: str) -> ModelSpec | None:
    known = registered_name(registry, name)
    return registry.find(known) if known is not None else None


def model_name(registry: ModelRegistry, name: str) -> str:
    """The name to serve a request for `name` under (unknown names pass on unchanged: the manager knows the
    configured dummy names, and answers a 404 for the rest)."""
    return registered_name(registry, name) or name


def listed_name(name: str) -> str:
    """A registry name as Ollama lists it: with a tag, `latest` when it has none."""
    return name if ":" in name else name + LATEST


def get(registry: ModelRegistry, name: str) -> ModelSpec:
    """The model `name` refers to; ModelNotFound (404) if none."""
    spec = find(registry, name)
    return spec if spec is not None else registry.get(name)
