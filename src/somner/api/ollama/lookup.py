"""Ollama model names → registry names, for every Ollama route.

Ollama names carry a tag, and a bare name means `name:latest`; the registry resolves names as clients write them
(tags, letter case: `ModelRegistry.registered_name`). Ids and aliases may contain ':' themselves (`qwen:7b` can be
an id), so a name is always tried exactly first.
"""

from __future__ import annotations

from somner.models.registry import LATEST_TAG, ModelRegistry

LATEST = LATEST_TAG


def registered_name(registry: ModelRegistry, name: str) -> str | None:
    """The id or alias, exactly as the registry knows it, that `name` refers to; None if none."""
    return registry.registered_name(name)


def model_name(registry: ModelRegistry, name: str) -> str:
    """The name to serve a request for `name` under (unknown names pass on unchanged: the manager knows the
    configured dummy names, and answers a 404 for the rest)."""
    return registered_name(registry, name) or name


def listed_name(name: str) -> str:
    """A registry name as Ollama lists it: with a tag, `latest` when it has none."""
    return name if ":" in name else name + LATEST
