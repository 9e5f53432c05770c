"""Sampler override presets, as TabbyAPI's: server-wide sampler values applied to every request on every dialect.

A preset is a YAML file `<sampler_presets_dir>/NAME.yml` mapping parameter names (TabbyAPI's sampler names, which
Somner's OpenAI dialect takes too) to `{override: VALUE, force: BOOL, additive: BOOL}`:
- without `force`, VALUE is the default: it applies when neither the request nor the model's defaults set it;
- with `force`, VALUE replaces whatever the request sent;
- `additive` (list parameters: stop, banned_strings, banned_tokens, ...) puts VALUE's items before the request's.
Values are checked by the same rules as request fields (a bad one is refused when the preset is switched to);
parameters Somner's engine has no use for (TabbyAPI's `smoothing_factor`, `skew`, ...) are accepted and reported as
not applied. One preset (or an inline set) is active at a time; `apply` runs for every generation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from somner.core import SamplingParams
from somner.errors import BadRequest
from somner.models.names import is_valid_model_name

log = logging.getLogger(__name__)

Decoder = Callable[[dict[str, Any]], SamplingParams]
"""Sampler parameters by wire name → the core values they set (raises BadRequest for a bad one)."""

_ENTRY_KEYS = frozenset({"override", "force", "additive"})
_UNSET = SamplingParams()


@dataclass(frozen=True, slots=True)
class Override:
    param: str  # the name as the preset gives it
    value: Any  # the value as the preset gives it (for listing)
    force: bool
    additive: bool
    fields: dict[str, Any]  # core field → core value


def _unset(value: Any, default: Any) -> bool:
    return value is None or value == default


def parse_overrides(data: object, decode: Decoder) -> dict[str, Override]:
    """A preset's mapping (from YAML or a request), checked; BadRequest names the first bad parameter."""
    if not isinstance(data, dict):
        raise BadRequest("A sampler override preset must map parameter names to {override, force, additive}.")
    overrides: dict[str, Override] = {}
    for param, entry in data.items():
        if not isinstance(param, str) or not isinstance(entry, dict) or not set(entry) <= _ENTRY_KEYS:
            raise BadRequest(
                f"Invalid sampler override {param!r}: expected a mapping of override, force and additive.",
                param=str(param),
            )
        force, additive = entry.get("force", False), entry.get("additive", False)
        if not isinstance(force, bool) or not isinstance(additive, bool):
            raise BadRequest(f"Invalid sampler override {param!r}: force and additive are true or false.", param=param)
        value = entry.get("override")
        if value is None:
            continue  # (TabbyAPI drops empty overrides)
        decoded = decode({param: value})
        fields = {
            f.name: getattr(decoded, f.name)
            for f in dataclasses.fields(decoded)
            if not _unset(getattr(decoded, f.name), getattr(_UNSET, f.name))
        }
        if not fields:
            log.warning("sampler override %r is not applied: this engine has no such sampler", param)
        overrides[param] = Override(param=param, value=value, force=force, additive=additive, fields=fields)
    return overrides


def apply_overrides(sampling: SamplingParams, overrides: dict[str, Override]) -> None:
    """Apply `overrides` to a request's sampling parameters (after the model's defaults)."""
    for override in overrides.values():
        for name, value in override.fields.items():
            current = getattr(sampling, name)
            if override.additive and isinstance(value, list):
                setattr(sampling, name, [*value, *(current or [])])
            elif override.force or _unset(current, getattr(_UNSET, name)):
                setattr(sampling, name, list(value) if isinstance(value, list) else value)


class SamplerPresets:
    """The presets folder and the active overrides (switched by TabbyAPI's calls, or `sampler_preset` at start)."""

    def __init__(self, directory: Path, decode: Decoder) -> None:
        self.directory = directory
        self._decode = decode
        self.selected: str | None = None
        self.active: dict[str, Override] = {}

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.yml") if p.is_file() and is_valid_model_name(p.stem))

    def read(self, name: str) -> dict[str, Override]:
        """The preset `name`, checked; BadRequest when it does not exist or is not valid."""
        path = self.directory / f"{name.removesuffix('.yml')}.yml"
        if not is_valid_model_name(path.stem) or not path.is_file():
            raise BadRequest(f"Sampler override preset with name {name} does not exist. Check the spelling?")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadRequest(f"The sampler override preset {name} cannot be read: {exc}") from None
        return parse_overrides(data, self._decode)

    def switch(self, preset: str | None = None, inline: dict[str, Any] | None = None) -> None:
        """Make a preset (by name) or an inline set of overrides the active one."""
        if preset is not None:
            self.active, self.selected = self.read(preset), preset.removesuffix(".yml")
        elif inline is not None:
            self.active, self.selected = parse_overrides(inline, self._decode), None
        else:
            raise BadRequest("A sampler override preset or dictionary wasn't provided.")
        log.info("sampler overrides: %s", self.selected or "inline" if self.active else "none")

    def unload(self) -> None:
        self.active, self.selected = {}, None

    def listing(self) -> dict[str, dict[str, Any]]:
        """The active overrides as TabbyAPI lists them."""
        return {o.param: {"override": o.value, "force": o.force, "additive": o.additive} for o in self.active.values()}

    def apply(self, sampling: SamplingParams) -> None:
        if self.active:
            apply_overrides(sampling, self.active)
