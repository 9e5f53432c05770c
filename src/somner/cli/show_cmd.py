"""`somner show MODEL`: what a model is (architecture, size, context, quantization, capabilities), how it talks
(chat template, default options, system message) and how it is served (state, context per generation, memory,
its configuration entry).

From the running server when there is one: Ollama's `/api/show` (the GGUF's facts, template, defaults) and, with an
admin key, `/admin/models/{id}` (state, served context, configuration entry). With no server running, the same
facts come from the files: the configuration, the model registry and the GGUF header, through the code the server
uses for them (`somner.api.ollama.catalog`), so both answers agree.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from somner.cli import remote

TEMPLATE_PREVIEW_LINES = 8


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Everything `show` prints about one model, whichever the source."""

    model: str
    source: str  # "server" or "files"
    show: dict[str, Any]  # Ollama's /api/show answer (or the same, built from the files)
    serving: dict[str, Any] | None  # /admin/models/{id} without its entry (None: not an admin key)
    entry: dict[str, Any] | None  # the configuration entry (None: not an admin key)
    url: str | None = None
    template: str = ""  # the chat template the model is served with (see `template_in_use`)
    template_origin: str = ""

    def _info(self, suffix: str) -> Any:
        info = self.show.get("model_info") or {}
        arch = info.get("general.architecture")
        return info.get(f"{arch}.{suffix}") if isinstance(arch, str) else None

    def summary(self) -> dict[str, Any]:
        """The facts as one flat JSON object, for scripts (`--json`)."""
        details = self.show.get("details") or {}
        info = self.show.get("model_info") or {}
        return {
            "model": self.model,
            "source": self.source,
            "url": self.url,
            "architecture": info.get("general.architecture") or details.get("family") or None,
            "parameter_size": details.get("parameter_size") or None,
            "context_length": self._info("context_length"),
            "embedding_length": self._info("embedding_length"),
            "quantization": details.get("quantization_level") or None,
            "format": details.get("format") or None,
            "capabilities": self.show.get("capabilities") or [],
            "defaults": parse_parameters(self.show.get("parameters") or ""),
            "system": self.show.get("system"),
            "template": self.template,
            "template_origin": self.template_origin,
            "license": self.show.get("license") or None,
            "serving": self.serving,
            "entry": self.entry,
            "model_info": info,
        }


def complete_models(incomplete: str) -> list[str]:
    """Shell completion for model names: the ids and aliases the configuration and the models directory give
    (read offline: completion must be quick and must not need a running server or a key)."""
    try:
        from somner.models.registry import ModelRegistry
        from somner.settings import load_settings, resolve_data_dir, resolve_models_dir

        settings = load_settings()
        registry = ModelRegistry(settings, resolve_models_dir(settings, resolve_data_dir(settings)))
        names = [name for spec in registry.specs() for name in spec.names]
    except Exception:  # completion offers nothing rather than a traceback in the shell
        return []
    return sorted(name for name in names if name.startswith(incomplete))


def parse_parameters(text: str) -> dict[str, Any]:
    """Ollama's `parameters` text ("name value" lines; stop strings JSON-quoted, one line each) as a mapping."""
    values: dict[str, Any] = {}
    for line in text.splitlines():
        name, _, raw = line.strip().partition(" ")
        raw = raw.strip()
        if not name:
            continue
        value: Any = raw
        with contextlib.suppress(ValueError):  # (numbers and quoted strings; anything else stays text)
            value = json.loads(raw)
        if name == "stop":
            values.setdefault("stop", []).append(value)
        else:
            values[name] = value
    return values


def template_in_use(shown: dict[str, Any], card: dict[str, Any] | None) -> tuple[str, str]:
    """(text, origin) of the chat template the model is served with. `/api/show` gives the configured one (a
    built-in's name, or a file's text) or the model file's; a model with neither gets a built-in when it loads,
    which TabbyAPI's model card names once it is loaded (`card`), and which otherwise is the one its architecture
    picks (the engine's own rule)."""
    from somner.core.template_names import BUILTIN_TEMPLATES, TEMPLATE_ALIASES

    text = str(shown.get("template") or "")
    if TEMPLATE_ALIASES.get(text.strip(), text.strip()) in BUILTIN_TEMPLATES:
        from somner.engine.templates import builtin_source

        return builtin_source(text.strip()), f"built-in {text.strip()}, configured"
    if text:
        return text, "the model's own, or configured"
    content = card.get("prompt_template_content") if card else None
    if isinstance(content, str) and content:
        return content, f"built-in {(card or {}).get('prompt_template')}: the model has none"
    from somner.engine.templates import TemplateNotFound, choose_template

    architecture = (shown.get("model_info") or {}).get("general.architecture")
    try:
        label, source = choose_template(None, None, str(architecture or ""), lambda _marker: False)
    except TemplateNotFound:
        return "", "none known yet: the engine picks a built-in from the model's vocabulary when it loads"
    return source, f"built-in {label}: the model has none"


def _optional(server: remote.Server, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
    """A call that may be missing or refused (not an admin key; a server without it, such as Ollama, an older
    Somner or one without that dialect): None then, and `show` prints what it has."""
    try:
        body = server.request("GET", path, params=params)
    except remote.ServerError as exc:
        if exc.status in (401, 403, 404, 405):
            return None
        raise
    return body if isinstance(body, dict) else None


def from_server(server: remote.Server, model: str) -> ModelFacts:
    """Raises remote.ServerError (an unknown model is the server's 404)."""
    shown = server.request("POST", "/api/show", json={"model": model})
    if not isinstance(shown, dict):
        raise remote.ServerError(f"{server.url}/api/show answered something that is not a model's description")
    detail = None
    for name in dict.fromkeys((model, model.removesuffix(":latest"))):  # (Ollama clients say NAME:latest)
        detail = _optional(server, f"/admin/models/{quote(name, safe='/')}")
        if detail is not None:
            break
    entry = detail.pop("entry", None) if detail is not None else None
    card = None
    if not shown.get("template"):
        found = _optional(server, "/v1/model", {"model": model})
        card = found.get("parameters") if found is not None and isinstance(found.get("parameters"), dict) else None
    template, origin = template_in_use(shown, card)
    return ModelFacts(model, "server", shown, detail, entry, server.url, template, origin)


def from_files(config: Path | None, data_dir: Path | None, model: str) -> ModelFacts:
    """The same facts read from the configuration and the model's file; exits with one line for an unknown model
    or a broken configuration."""
    from somner.api.admin.models import entry_json
    from somner.api.ollama import catalog
    from somner.cli.common import load_or_exit
    from somner.errors import SomnerError
    from somner.models.context import model_context
    from somner.models.registry import ModelConfigError, ModelRegistry
    from somner.settings import resolve_data_dir, resolve_models_dir

    settings = load_or_exit(config, {"data_dir": data_dir})
    try:
        registry = ModelRegistry(settings, resolve_models_dir(settings, resolve_data_dir(settings)))
        spec = registry.get(model.removesuffix(":latest") if registry.find(model) is None else model)
    except ModelConfigError as exc:
        remote.fail(str(exc))
    except SomnerError as exc:
        remote.fail(exc.message)
    shown = catalog.show(spec, catalog.describe(spec, time.time()))
    serving = {
        "id": spec.id,
        "aliases": list(spec.entry.aliases),
        "state": "not running",
        "backend": spec.kind,
        "source": spec.source,
        "context_length": model_context(spec),
        "parallel": spec.parallel,
    }
    template, origin = template_in_use(shown, None)
    return ModelFacts(spec.id, "files", shown, serving, entry_json(spec.entry), None, template, origin)


# -- rendering ---------------------------------------------------------------------------------------------------


def _size(value: object) -> str | None:
    if not isinstance(value, int) or value <= 0:
        return None
    return f"{value / 1024**3:.1f} GiB" if value >= 1024**3 else f"{value / 1024**2:.0f} MiB"


def _section(title: str, rows: list[tuple[str, object]] | list[str]) -> list[str]:
    lines = [f"  {title}"]
    for row in rows:
        if isinstance(row, tuple):
            label, value = row
            if value is None or value == "":
                continue
            lines.append(f"    {label:<20}{value}")
        else:
            lines.append(f"    {row}")
    return [*lines, ""] if len(lines) > 1 else []


def _serving_rows(serving: dict[str, Any]) -> list[tuple[str, object]]:
    state = serving.get("state")
    in_flight = serving.get("in_flight")
    if state and isinstance(in_flight, int) and in_flight:
        state = f"{state} ({in_flight} in flight)"
    context = serving.get("context_length")
    parallel = serving.get("parallel")
    if isinstance(context, int):
        slots = f", {parallel} at once" if isinstance(parallel, int) else ""
        context = f"{context} tokens per generation{slots}"
    aliases = ", ".join(serving.get("aliases") or [])
    return [
        ("state", state),
        ("backend", serving.get("backend")),
        ("context", context),
        ("memory (estimate)", _size(serving.get("memory_estimate"))),
        ("aliases", aliases),
        ("configured in", serving.get("source")),
        ("error", serving.get("error")),
    ]


def render(facts: ModelFacts, *, template_lines: int = TEMPLATE_PREVIEW_LINES) -> str:
    """The human view, in Ollama's layout (indented sections), with Somner's serving facts and config entry."""
    summary = facts.summary()
    lines = _section(
        "Model",
        [
            ("architecture", summary["architecture"]),
            ("parameters", summary["parameter_size"]),
            ("context length", summary["context_length"]),
            ("embedding length", summary["embedding_length"]),
            ("quantization", summary["quantization"]),
        ],
    )
    lines += _section("Capabilities", list(summary["capabilities"]))
    if facts.serving is not None:
        lines += _section("Serving", _serving_rows(facts.serving))
    rows = [line.split(None, 1) for line in (facts.show.get("parameters") or "").splitlines() if line.strip()]
    lines += _section("Parameters", [f"{row[0]:<16}{row[1] if len(row) > 1 else ''}" for row in rows])
    if summary["system"]:
        lines += _section("System", str(summary["system"]).splitlines())
    template = facts.template.splitlines()
    shown = [f"({facts.template_origin})", *template[:template_lines]]
    if len(template) > template_lines:
        more = len(template) - template_lines
        shown.append(f"... {more} more line{'s' if more > 1 else ''} (--template prints it all)")
    lines += _section("Template", shown)
    if facts.entry is not None:
        import yaml

        lines += _section("Config entry", yaml.safe_dump(facts.entry, sort_keys=False).rstrip().splitlines())
    if summary["license"]:
        lines += _section("License", str(summary["license"]).splitlines()[:3])
    return "\n".join(lines).rstrip()


def show(
    model: str = typer.Argument(..., help="Model id or alias.", autocompletion=complete_models),
    template: bool = typer.Option(False, "--template", help="Print only the chat template."),
    parameters: bool = typer.Option(False, "--parameters", help="Print only the default options (Ollama's form)."),
    system: bool = typer.Option(False, "--system", help="Print only the default system message."),
    modelfile: bool = typer.Option(False, "--modelfile", help="Print only a Modelfile-like summary."),
    as_json: bool = typer.Option(False, "--json", help="Print every fact as one JSON object."),
    offline: bool = typer.Option(False, "--offline", help="Read the files even when a server runs."),
    url: str | None = remote.UrlOption,
    key: str | None = remote.KeyOption,
    config: Path | None = remote.ConfigOption,
    data_dir: Path | None = remote.DataDirOption,
) -> None:
    """Show a model: architecture, parameters, context, quantization, capabilities, template, defaults, config."""
    if sum((template, parameters, system, modelfile, as_json)) > 1:
        remote.fail("choose one of --template, --parameters, --system, --modelfile, --json", code=2)
    if offline:
        facts = from_files(config, data_dir, model)
    else:
        settings, directory, found, recorded = remote.locate(config, data_dir, url)
        if found is None:
            typer.echo("(no server is running: read from the files)", err=True)
            facts = from_files(config, data_dir, model)
        else:
            server = remote.server_at(found, key, settings, directory, recorded=recorded)
            try:
                facts = from_server(server, model)
            except remote.ServerError as exc:
                remote.fail(str(exc))
    if template:
        typer.echo(facts.template.rstrip("\n"))
    elif parameters:
        typer.echo(facts.show.get("parameters") or "")
    elif system:
        typer.echo(facts.show.get("system") or "")
    elif modelfile:
        typer.echo((facts.show.get("modelfile") or "").rstrip())
    elif as_json:
        typer.echo(json.dumps(facts.summary(), indent=2, ensure_ascii=False, default=str))
    else:
        typer.echo(render(facts))
