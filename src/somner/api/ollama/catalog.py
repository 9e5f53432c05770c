"""What Ollama's model listings say about a model (`/api/tags`, `/api/show`, `/api/ps`), from its GGUF header and
its configuration. GGUF headers are read in a worker thread; a model without a readable GGUF (an upstream, a
process backend, a broken file) is still listed, with what is known."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from somner.models.capabilities import Capabilities, Capability, GGUFFacts, capabilities_of, facts_from
from somner.models.gguf import GGUFError, read_gguf
from somner.models.registry import ModelSpec
from somner.settings.models import ModelDefaults

# llama.cpp's `general.file_type` values (enum llama_ftype) by the quantization names people use.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# Metadata too large or too internal for `model_info` (the chat template is `template`; vocabularies are skipped
# by the reader and show as null, which Ollama also does).
_HIDDEN_PREFIXES = ("tokenizer.chat_template",)


@dataclass(frozen=True, slots=True)
class Description:
    size: int
    modified_at: float
    digest: str
    details: dict[str, Any]
    model_info: dict[str, Any] = field(default_factory=dict)
    gguf_template: str | None = None
    context_length: int | None = None
    capabilities: list[str] = field(default_factory=list)  # in Ollama's words


def quantization(file_type: object) -> str:
    return _FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else ""


def parameter_size(metadata: dict[str, Any]) -> str:
    """`general.size_label` (e.g. "270M", "8x7B") when the file has one, else from `general.parameter_count`."""
    label = metadata.get("general.size_label")
    if isinstance(label, str) and label:
        return label
    count = metadata.get("general.parameter_count")
    if isinstance(count, int) and count > 0:
        for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if count >= scale:
                return f"{count / scale:.2f}{unit}"
        return str(count)
    return ""


def digest(path: Path, size: int, mtime_ns: int) -> str:
    """A stable stand-in for Ollama's content digest: sha256 of the file's path, size and mtime. Hashing the
    content would read gigabytes per listing; this changes whenever the file does, which is what clients use it for."""
    return hashlib.sha256(f"{path}|{size}|{mtime_ns}".encode()).hexdigest()


def describe(spec: ModelSpec, started_at: float) -> Description:
    """Blocking (reads the GGUF header): call it in a worker thread."""
    details: dict[str, Any] = {
        "parent_model": "",
        "format": "gguf" if spec.path is not None else "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }
    path = spec.path
    if path is None:
        return Description(
            size=0,
            modified_at=started_at,
            digest=hashlib.sha256(spec.id.encode()).hexdigest(),
            details=details,
            capabilities=ollama_capabilities(capabilities_of(spec, None)),
        )
    try:
        stat = path.stat()
    except OSError:
        unknown = ollama_capabilities(capabilities_of(spec, None))
        return Description(
            size=0, modified_at=started_at, digest=digest(path, 0, 0), details=details, capabilities=unknown
        )
    try:
        metadata = read_gguf(path).metadata
        facts: GGUFFacts | None = facts_from(metadata)
    except GGUFError:
        metadata, facts = {}, None
    family = metadata.get("general.architecture")
    if isinstance(family, str):
        details["family"] = family
        details["families"] = [family]
    details["parameter_size"] = parameter_size(metadata)
    details["quantization_level"] = quantization(metadata.get("general.file_type"))
    template = metadata.get("tokenizer.chat_template")
    context = metadata.get(f"{family}.context_length") if isinstance(family, str) else None
    info = {
        key: value
        for key, value in metadata.items()
        if not key.startswith(_HIDDEN_PREFIXES) and not (isinstance(value, str) and len(value) > 4096)
    }
    return Description(
        size=stat.st_size,
        modified_at=stat.st_mtime,
        digest=digest(path, stat.st_size, stat.st_mtime_ns),
        details=details,
        model_info=info,
        gguf_template=template if isinstance(template, str) else None,
        context_length=context if isinstance(context, int) else None,
        capabilities=ollama_capabilities(capabilities_of(spec, facts)),
    )


def template_text(spec: ModelSpec, description: Description) -> str:
    """The chat template in use: the configured one (a file's text, or a built-in's name), else the GGUF's."""
    configured = spec.entry.template
    if configured is not None:
        candidate = Path(configured).expanduser()
        try:
            return candidate.read_text(encoding="utf-8") if candidate.is_file() else configured
        except OSError:
            return configured
    return description.gguf_template or ""


_PARAMETER_NAMES = {"max_tokens": "num_predict"}


def parameters(defaults: ModelDefaults | None) -> str:
    """The model's request defaults as Ollama's `parameters` text: one "name value" line each, stop strings
    quoted and repeated."""
    if defaults is None:
        return ""
    lines = []
    for name, value in defaults.model_dump(exclude_none=True).items():
        if name == "system":
            continue
        key = _PARAMETER_NAMES.get(name, name)
        if name == "stop":
            lines += [f"{key:<30} {json.dumps(item)}" for item in value]
        else:
            lines.append(f"{key:<30} {value}")
    return "\n".join(lines)


def modelfile(spec: ModelSpec, template: str, params: str) -> str:
    """A Modelfile-like summary (Somner has no Modelfiles: the configuration holds this)."""
    lines = ["# Generated by Somner from the model's configuration", f"FROM {spec.path or spec.id}"]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER {line}" for line in params.splitlines()]
    return "\n".join(lines) + "\n"


def show(spec: ModelSpec, description: Description) -> dict[str, Any]:
    """`/api/show`'s answer but for `modified_at` (the route adds it in the wire's time format). `somner show`
    builds the same from the files when no server runs."""
    template = template_text(spec, description)
    params = parameters(spec.entry.defaults)
    body: dict[str, Any] = {
        "license": str(description.model_info.get("general.license", "")),
        "modelfile": modelfile(spec, template, params),
        "parameters": params,
        "template": template,
        "system": spec.entry.defaults.system if spec.entry.defaults is not None else None,
        "details": description.details,
        "model_info": description.model_info,
        "capabilities": description.capabilities,
    }
    if body["system"] is None:
        del body["system"]
    return body


# Ollama's names for what a model can do; its "completion" covers chat, and "embedding" marks embedding models.
_OLLAMA_NAMES = {
    Capability.COMPLETION: "completion",
    Capability.TOOLS: "tools",
    Capability.REASONING: "thinking",
    Capability.VISION: "vision",
    Capability.RERANK: "rerank",
}


def ollama_capabilities(capabilities: Capabilities) -> list[str]:
    """`capabilities` in Ollama's words (`/api/show`, `/api/tags`)."""
    if Capability.COMPLETION not in capabilities and Capability.EMBEDDINGS in capabilities:
        return ["embedding"]
    return [name for capability, name in _OLLAMA_NAMES.items() if capability in capabilities]
