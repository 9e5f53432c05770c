"""Layering rules from DESIGN.md, checked on the source: the core and the engine know nothing of the HTTP API,
the core knows no wire format, and the API never reaches into storage directly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "somner"


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (SRC / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("core", ("somner.api", "somner.wire", "somner.engine", "somner.models", "fastapi", "starlette", "httpx")),
        ("engine", ("somner.api", "somner.models", "somner.store", "somner.exl3", "fastapi")),
        # The ExLlamaV3 engine is imported by its worker alone (and imports torch only when a model loads).
        ("exl3", ("somner.api", "somner.models", "somner.store", "fastapi", "torch", "exllamav3")),
        ("api", ("somner.store", "somner.engine", "somner.exl3")),
        ("wire", ("somner.api", "somner.engine", "somner.models", "starlette", "fastapi")),
        ("models", ("somner.api", "somner.engine", "somner.exl3", "fastapi", "starlette")),
        # The console is pages and files: whatever it shows, the browser asks the API for.
        ("console", ("somner.store", "somner.engine", "somner.models", "somner.gateway", "somner.exl3")),
    ],
)
def test_layering(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = [
        f"{module} imports {name}"
        for module, names in imports_of(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert offenders == []


def test_no_module_reads_settings_or_environment_at_import() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            ):
                text = ast.unparse(node)
                if "os.environ" in text or "load_settings(" in text or "Settings(" in text:
                    offenders.append(f"{path.relative_to(SRC)}: {text[:60]}")
    assert offenders == []
