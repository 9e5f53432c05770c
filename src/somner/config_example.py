"""`config.example.yaml`, generated from the settings model so it cannot drift from the code.

Every key appears with its default and its description; `models:` gets a commented example entry.
A test checks that the committed file equals `render()` and that it loads.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from pydantic import BaseModel

from somner.settings import ModelEntry, Settings

HEADER = """\
# Somner configuration. Every key is optional; shown here with its default.
# Precedence: this file < SOMNER_* environment variables (nested keys joined with "__",
# e.g. SOMNER_ENGINE__PARALLEL=8) < command-line flags.
# Durations are seconds or strings such as 30s, 5m, 1h.
"""

_EXAMPLE_ENTRY: dict[str, Any] = {"id": "my-model", "path": "/srv/models/my-model.Q4_K_M.gguf", "ctx": 8192}


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=108 - len(indent))]


def _render_model(model: type[BaseModel], values: dict[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    for name, field in model.model_fields.items():
        if field.description:
            lines += _comment(field.description, indent)
        value = values.get(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{indent}{name}:")
            nested = _render_model(annotation, value or {}, indent + "  ")
            while nested and nested[-1] == "":
                nested.pop()
            lines += nested
        elif name == "models" and model is Settings:
            lines.append(f"{indent}{name}: []")
            lines += _example_entry(indent)
        else:
            lines.append(f"{indent}{name}: {_scalar(value)}")
        lines.append("")
    return lines


def _example_entry(indent: str) -> list[str]:
    lines = [f"{indent}# For example:", f"{indent}# models:"]
    first = True
    for name, field in ModelEntry.model_fields.items():
        value = _EXAMPLE_ENTRY.get(name)
        if value is None:
            continue
        lead = "  - " if first else "    "
        first = False
        lines.append(f"{indent}#{lead}{name}: {_scalar(value)}    # {field.description}")
    return lines


def render() -> str:
    defaults = Settings().model_dump(mode="json")
    body = _render_model(Settings, defaults, "")
    while body and body[-1] == "":
        body.pop()
    return HEADER + "\n" + "\n".join(body) + "\n"
