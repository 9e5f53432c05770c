"""Vetting a model file before any engine sees it: the gateway refuses a hostile or broken GGUF itself, so
llama.cpp's own parser never runs on it.

A file passes when Somner's reader (`gguf`) accepts its header, metadata and tensor table (bounded counts and
strings, no nested arrays, aligned offsets, shapes that do not overflow), its tensor data lies inside the file,
and its chat template stays within the sandbox it is rendered in. The template check is static: it refuses
templates that name underscore attributes (the way out of every known Jinja sandbox escape starts with
`__class__`, `__globals__`, `__init__`, ...) or try to load other templates. The engine still renders templates
in jinja2's immutable sandbox; this check only makes a hostile template a clear refusal at load time, before any
of it is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from somner.models.gguf import GGUFError, GGUFInfo, check_complete

_LOADING = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def vet_model_file(path: Path) -> GGUFInfo:
    """The file's header when it is safe to hand to an engine; GGUFError saying why not otherwise."""
    info = check_complete(path)
    template = info.chat_template
    if template is not None:
        problem = template_problem(template)
        if problem is not None:
            raise GGUFError(f"{path.name}: its chat template {problem}")
    return info


def template_problem(source: str) -> str | None:
    """Why a chat template is refused (None when it is acceptable)."""
    try:
        tree = ImmutableSandboxedEnvironment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"does not compile: {exc.message}"
    for node in tree.find_all(_LOADING):
        return f"tries to load another template ({type(node).__name__.lower()}), which is not allowed"
    for name in _names_used(tree):
        if name.startswith("_"):
            return f"reaches for the private attribute {name[:40]!r}, which the sandbox forbids"
    return None


def _names_used(tree: nodes.Template) -> Iterator[str]:
    """Attribute names a template asks for: `x.name`, `x['name']`, `x|attr('name')`."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            yield node.attr
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                yield node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            for arg in node.args:
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    yield arg.value
