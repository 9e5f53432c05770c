"""Every deployment artifact under deploy/, checked by the tool that consumes it.

Each check skips, naming the tool and its Debian package, where the tool is missing (`.ci/run` installs them).
Beyond "the tool accepts it", each test asserts what the artifact promises: the Dockerfiles run as a non-root user
with a health check and no secret, the compose file's services wait for healthy dependencies, the unit is hardened,
and the NixOS module generates only keys Somner's settings accept.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from somner.settings import ApiServer, EngineSettings, Settings, load_settings, unknown_environment_keys

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NIX_DIR = DEPLOY / "nix"


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package {package})")
    return path


def run(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker and systemd read them (no quoting is used in our examples)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
            values[key.strip()] = value.strip()
    return values


# -- Dockerfiles -------------------------------------------------------------------------------------------------

KNOWN_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "ONBUILD",
    "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR", "RUN",
}  # fmt: skip
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|PASSWD|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    written: str  # the keyword as written, to hold the file to upper-case keywords
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments (also inside continuations) dropped."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        written, _, arguments = pending.partition(" ")
        instructions.append(Instruction(written.upper(), written, arguments.strip(), start))
        pending = ""
    assert not pending, "the file ends inside a line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each starting with its FROM); ARGs before the first FROM dropped."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    if instruction.keyword == "ARG":
        name, _, value = instruction.arguments.partition("=")
        return [(name.strip(), value.strip().strip('"'))]
    return [(key, value) for key, _, value in (item.partition("=") for item in shlex.split(instruction.arguments))]


def copy_sources(instruction: Instruction) -> list[str]:
    """The build-context paths a COPY takes (none when it copies from another stage)."""
    words = shlex.split(instruction.arguments)
    if any(word.startswith("--from") for word in words):
        return []
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def excluded_from_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, a matched directory covers its contents."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip().strip("/"))
        if any(re.fullmatch(regex, "/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_parses_and_runs_unprivileged_with_a_health_check(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile.read_text(encoding="utf-8"))
    for instruction in instructions:
        assert instruction.keyword in KNOWN_INSTRUCTIONS, f"line {instruction.line}: unknown {instruction.written}"
        assert instruction.written.isupper(), f"line {instruction.line}: write {instruction.keyword} in capitals"
    first = next(i for i in instructions if i.keyword != "ARG")
    assert first.keyword == "FROM", "only ARG may come before the first FROM"

    built = stages(instructions)
    assert len(built) >= 2, "a builder stage and a final stage"
    names: set[str] = set()
    for stage in built:
        words = stage[0].arguments.split()
        for instruction in stage:
            for source in re.findall(r"\bfrom=([\w.-]+)", instruction.arguments):
                assert source in names, f"line {instruction.line}: stage {source!r} is not defined before it"
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])

    final = built[-1]
    keywords = [i.keyword for i in final]
    users = [i for i in final if i.keyword == "USER"]
    assert users, "the final stage sets a USER"
    assert users[-1].arguments.split(":")[0] not in {"root", "0"}
    entrypoints = [i for i in final if i.keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0].arguments) == ["somner", "serve"]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    healthchecks = [i for i in final if i.keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/ping" in healthchecks[0].arguments
    check = json.loads(healthchecks[0].arguments.split(" CMD ", 1)[1])
    assert isinstance(check, list), "exec form: the check must not depend on a shell"
    assert any(i.keyword == "VOLUME" and "/data" in i.arguments.split() for i in final)
    assert any(i.keyword == "EXPOSE" and "8000" in i.arguments.split() for i in final)
    environment = dict(pair for i in final if i.keyword == "ENV" for pair in env_pairs(i))
    assert environment["SOMNER_DATA_DIR"] == "/data"
    assert environment["SOMNER_HOST"] == "0.0.0.0"

    for instruction in instructions:
        assert "sk-somner-" not in instruction.arguments, f"line {instruction.line}: a key is baked in"
        if instruction.keyword in {"ENV", "ARG"}:
            for name, value in env_pairs(instruction):
                assert not (SECRET_NAME.search(name) and value), f"line {instruction.line}: {name} bakes in a secret"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_builds_llama_cpp_in_the_builder_only(dockerfile: Path) -> None:
    built = stages(parse_dockerfile(dockerfile.read_text(encoding="utf-8")))
    builder, final = built[0], built[-1]
    builder_text = " ".join(i.arguments for i in builder)
    final_text = " ".join(i.arguments for i in final)
    assert "cmake" in builder_text and "pip wheel" in builder_text
    assert "cmake" not in final_text and "build-essential" not in final_text, "no compiler in the final image"
    assert "--no-index" in final_text, "the final stage installs only the builder's wheels"
    if dockerfile.name == "Dockerfile.cuda":
        assert "-DGGML_CUDA=on" in builder_text
        assert "-devel-" in builder[0].arguments and "-runtime-" in final[0].arguments
    else:
        assert "python:3.11-slim-bookworm" in (DEPLOY / "Dockerfile").read_text(encoding="utf-8")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_what_dockerignore_lets_into_the_context(dockerfile: Path) -> None:
    patterns = dockerignore_patterns()
    for instruction in parse_dockerfile(dockerfile.read_text(encoding="utf-8")):
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        for source in copy_sources(instruction):
            assert (REPO / source).exists(), f"line {instruction.line}: {source} is not in the repository"
            assert not excluded_from_context(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context() -> None:
    patterns = dockerignore_patterns()
    for path in [
        ".venv/bin/python", ".git/HEAD", "wheelhouse/somner-0.1.0-py3-none-any.whl", "data/somner.db",
        ".gpu/notes.txt", "deploy/somner.env", "deploy/postgres.env", "tests/conftest.py", "models/chat.gguf",
        "src/somner/__pycache__/app.cpython-311.pyc", ".mypy_cache/3.11/x.json", "src/somner.egg-info/PKG-INFO",
    ]:  # fmt: skip
        assert excluded_from_context(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ["pyproject.toml", "README.md", "src/somner/__init__.py", "src/somner/engine/templates/gemma.jinja"]:
        assert not excluded_from_context(path, patterns), f"{path} is needed by the build"
    packaged = [p.relative_to(REPO).as_posix() for p in (REPO / "src").rglob("*.py") if "__pycache__" not in p.parts]
    assert packaged
    assert not [p for p in packaged if excluded_from_context(p, patterns)]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    # The matcher above decides what the previous tests assert; check it on Docker's documented cases.
    assert excluded_from_context("a/b/c.md", ["**/*.md"])
    assert excluded_from_context("c.md", ["**/*.md"])
    assert not excluded_from_context("README.md", ["*.md", "!README.md"])
    assert excluded_from_context("temp/x/y", ["temp"])
    assert not excluded_from_context("src/a.py", ["*", "!src/"])
    assert excluded_from_context("src/x/__pycache__/a.pyc", ["*", "!src/", "**/__pycache__"])


# -- compose -----------------------------------------------------------------------------------------------------


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    pytest.skip("docker-compose is not installed (Debian package docker-compose)")


@pytest.fixture
def compose_project(tmp_path: Path) -> Path:
    """deploy/ copied with each example env file in place, as an operator would set it up."""
    project = tmp_path / "deploy"
    shutil.copytree(DEPLOY, project)
    for example in project.glob("*.env.example"):
        shutil.copyfile(example, project / example.name.removesuffix(".example"))
    return project


def compose_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOMNER_", "COMPOSE_", "DOCKER_"))}
    env["HOME"] = str(tmp_path)
    return env


def test_compose_file_is_valid_with_the_example_env_files(compose_project: Path, tmp_path: Path) -> None:
    command = compose_command()
    env = compose_env(tmp_path)
    quiet = run([*command, "-f", "compose.yaml", "config", "-q"], cwd=compose_project, env=env)
    assert quiet.returncode == 0, quiet.stderr
    resolved = run([*command, "-f", "compose.yaml", "--profile", "tailscale", "config"], cwd=compose_project, env=env)
    assert resolved.returncode == 0, resolved.stderr
    config: dict[str, Any] = yaml.safe_load(resolved.stdout)
    services: dict[str, Any] = config["services"]
    assert set(services) == {"somner", "postgres", "redis", "caddy", "tailscale"}

    somner = services["somner"]
    assert somner["build"]["dockerfile"] == "deploy/Dockerfile"
    assert Path(somner["build"]["context"]) == compose_project.parent
    assert "ports" not in somner, "only Caddy (or Tailscale) is reachable from outside"
    assert {name: dep["condition"] for name, dep in somner["depends_on"].items()} == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    assert any(volume.endswith(":/data:rw") or volume.endswith(":/data") for volume in map(str, somner["volumes"]))
    assert somner["environment"]["SOMNER_DATABASE__URL"].startswith("postgresql+asyncpg://")
    assert "profiles" not in somner

    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], f"{name} has a health check"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    caddy = services["caddy"]
    assert {(p["published"], p["target"]) for p in caddy["ports"]} >= {(80, 80), (443, 443)}
    assert any(str(volume).endswith("/Caddyfile:/etc/caddy/Caddyfile:ro") for volume in caddy["volumes"])
    tailscale = services["tailscale"]
    assert tailscale["profiles"] == ["tailscale"]
    assert tailscale["image"].startswith("tailscale/tailscale")
    assert "ports" not in tailscale


def test_compose_file_holds_no_secret() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    for name, service in config["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            assert not SECRET_NAME.search(key), f"{name}: {key} belongs in an env file"
            assert "sk-somner-" not in str(value)
    assert "POSTGRES_PASSWORD" not in text and "TS_AUTHKEY=" not in text


def test_example_env_files_are_settings_somner_accepts() -> None:
    somner = read_env_file(DEPLOY / "somner.env.example")
    assert unknown_environment_keys(somner) == [], "every SOMNER_* variable names a setting"
    settings = load_settings(environ=somner)
    assert somner["SOMNER_ADMIN_KEY"] == "", "the example ships no key: Somner creates one or the operator sets it"
    assert settings.database.url is not None
    url = settings.database.url.get_secret_value()
    match = re.fullmatch(r"postgresql\+asyncpg://(\w+):([^@]+)@postgres:5432/(\w+)", url)
    assert match is not None, url
    postgres = read_env_file(DEPLOY / "postgres.env.example")
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]) == match.groups()
    assert "TS_AUTHKEY" in read_env_file(DEPLOY / "tailscale.env.example")


def test_tailscale_serve_config_proxies_to_somner() -> None:
    serve = json.loads((DEPLOY / "tailscale-serve.json").read_text(encoding="utf-8"))
    handlers = [h for site in serve["Web"].values() for h in site["Handlers"].values()]
    assert handlers == [{"Proxy": "http://somner:8000"}]
    assert serve["TCP"]["443"]["HTTPS"] is True


# -- Caddy -------------------------------------------------------------------------------------------------------


def caddy_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMNER_")}
    env.update(
        SOMNER_DOMAIN="llm.example.com",
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    return env


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_caddyfile_validates(tmp_path: Path) -> None:
    caddy = require("caddy", "caddy")
    result = run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")], env=caddy_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_caddyfile_proxies_to_somner_without_buffering_streams(tmp_path: Path) -> None:
    caddy = require("caddy", "caddy")
    result = run(
        [caddy, "adapt", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")], env=caddy_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    hosts = [host for node in walk(config) for host in node.get("host", []) if isinstance(host, str)]
    assert hosts == ["llm.example.com"]
    proxies = [node for node in walk(config) if node.get("handler") == "reverse_proxy"]
    assert len(proxies) == 1
    assert proxies[0]["upstreams"] == [{"dial": "somner:8000"}]
    assert proxies[0]["flush_interval"] == -1
    assert not [node for node in walk(config) if node.get("handler") == "encode"], "compression buffers streams"
    headers = [node for node in walk(config) if node.get("handler") == "headers"]
    assert headers
    assert "Strict-Transport-Security" in json.dumps(headers)


# -- systemd -----------------------------------------------------------------------------------------------------

UNIT = DEPLOY / "somner.service"


def unit_directives(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) pairs in order; systemd allows a key more than once."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            current = sections.setdefault(stripped.strip("[]"), [])
            continue
        key, sep, value = stripped.partition("=")
        assert sep, f"{line!r} is not Key=Value"
        current.append((key.strip(), value.strip()))
    return sections


def unit_root(tmp_path: Path, unit_text: str) -> Path:
    """A root holding the system's own units (sysinit.target, ...), the unit, and its ExecStart as an executable,
    so `systemd-analyze verify --root` checks the unit here as it would on a machine where Somner is installed."""
    system_units = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    if system_units is None:
        pytest.skip("no systemd unit directory on this machine (Debian package systemd)")
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/somner.service").write_text(unit_text, encoding="utf-8")
    exec_start = dict(unit_directives(UNIT)["Service"])["ExecStart"].split()[0]
    binary = root / exec_start.lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n", encoding="utf-8")
    binary.chmod(0o755)
    return root


def verify_unit(root: Path) -> subprocess.CompletedProcess[str]:
    analyze = require("systemd-analyze", "systemd")
    return run([analyze, "verify", "--man=no", f"--root={root}", "somner.service"])


def test_systemd_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    result = verify_unit(unit_root(tmp_path, UNIT.read_text(encoding="utf-8")))
    # verify exits 0 even for keys it ignores; any output at all is a complaint about the unit.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_systemd_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    # The control for the test above: the same set-up with a misspelt key and a bad value does produce output.
    broken = UNIT.read_text(encoding="utf-8").replace("Restart=on-failure", "Restart=sometimes\nProtectSistem=strict")
    result = verify_unit(unit_root(tmp_path, broken))
    assert "sometimes" in result.stderr
    assert "ProtectSistem" in result.stderr


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    service = unit_directives(UNIT)["Service"]
    values = dict(service)
    assert values["User"] == "somner"
    assert values["StateDirectory"] == "somner"
    assert values["ProtectSystem"] == "strict"
    assert values["ProtectHome"] == "yes"
    assert values["NoNewPrivileges"] == "yes"
    assert values["PrivateTmp"] == "yes"
    assert values["Restart"] == "on-failure"
    assert values["KillSignal"] == "SIGTERM"
    assert values["EnvironmentFile"] == "-/etc/somner/somner.env"
    assert values["ExecStart"] == "/opt/somner/venv/bin/somner serve --config /etc/somner/config.yaml"
    assert ("Environment", "SOMNER_DATA_DIR=/var/lib/somner") in service
    # systemd must not kill before Somner has drained requests and stopped its engines.
    assert float(values["TimeoutStopSec"]) > Settings().drain_timeout + EngineSettings().stop_timeout

    analyze = require("systemd-analyze", "systemd")
    root = unit_root(tmp_path, UNIT.read_text(encoding="utf-8"))
    # Exposure is 0 (locked down) to 10 (unprotected); --threshold takes tenths and fails above it.
    result = run([analyze, "security", "--offline=yes", f"--root={root}", "--threshold=25", "somner.service"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level for somner.service" in result.stdout


# -- Nix ---------------------------------------------------------------------------------------------------------


def nix_env(tmp_path: Path) -> dict[str, str]:
    """Evaluation only: no daemon, no build users, state kept in the test's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIX_", "SOMNER_"))}
    env.update(
        HOME=str(tmp_path),
        NIX_CONFIG="build-users-group =\nexperimental-features =",
        NIX_STATE_DIR=str(tmp_path / "nix-state"),
        NIX_LOG_DIR=str(tmp_path / "nix-log"),
    )
    return env


def nix_eval(tmp_path: Path, expression: str) -> Any:
    nix = require("nix-instantiate", "nix-bin")
    result = run([nix, "--eval", "--strict", "--json", "--expr", expression], cwd=NIX_DIR, env=nix_env(tmp_path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", ["flake.nix", "module.nix", "settings.nix"])
def test_nix_file_parses(name: str, tmp_path: Path) -> None:
    nix = require("nix-instantiate", "nix-bin")
    result = run([nix, "--parse", str(NIX_DIR / name)], env=nix_env(tmp_path))
    assert result.returncode == 0, result.stderr


def test_flake_exposes_the_module(tmp_path: Path) -> None:
    outputs = nix_eval(
        tmp_path,
        "let flake = import ./flake.nix; self = flake.outputs { inherit self; }; in "
        "{ names = builtins.attrNames self.nixosModules; "
        "modules = map builtins.isFunction [ self.nixosModules.default self.nixosModules.somner ]; }",
    )
    assert outputs == {"names": ["default", "somner"], "modules": [True, True]}


# The module's option tree, read with a stand-in for nixpkgs' `lib` (mkOption returns its declaration), so the
# options' names and defaults can be fed to settings.nix here, without nixpkgs. `cfg` is then what NixOS would
# hand the module with every option at its default, plus the `overrides`.
MODULE_CFG = """
let
  declared = t: { _type = t; };
  types = {
    str = declared "str"; int = declared "int"; bool = declared "bool"; port = declared "port";
    package = declared "package"; number = declared "number";
    ints = { positive = declared "positive"; between = lo: hi: declared "between"; };
    nullOr = t: t; listOf = t: t; attrsOf = t: t; enum = values: declared "enum" // { inherit values; };
    submodule = m: { _type = "submodule"; inherit (m) options; };
  };
  lib = {
    inherit types;
    mkOption = o: o // { _option = true; };
    mkEnableOption = what: { _option = true; default = false; description = what; };
    mkIf = condition: value: value;
    optional = condition: value: if condition then [ value ] else [ ];
    optionalString = condition: text: if condition then text else "";
  };
  pkgs.formats.yaml = _: { type = declared "yaml"; generate = name: value: value; };
  module = import ./module.nix { inherit lib pkgs; config = throw "config is not read for options"; };
  options = module.options.services.somner;
  defaultsOf = opts: builtins.mapAttrs (name: o: if o ? _option then o.default or null else defaultsOf o) opts;
  modelDefaults = defaultsOf options.models.type.options;
  loraDefaults = defaultsOf options.loras.type.options;
  merge = left: right: left // builtins.mapAttrs
    (name: value: if builtins.isAttrs value && builtins.isAttrs (left.${name} or null) then merge left.${name} value
                  else value) right;
  overrides = OVERRIDES;
  cfg = merge (defaultsOf options) (overrides // {
    models = builtins.mapAttrs (id: entry: modelDefaults // entry) (overrides.models or { });
  });
in
{ settings = import ./settings.nix { inherit cfg; }; optionNames = builtins.attrNames options;
  modelOptionNames = builtins.attrNames options.models.type.options; inherit loraDefaults;
  apiServerNames = options.apiServers.type.values; }
"""


def module_settings(tmp_path: Path, overrides: str) -> dict[str, Any]:
    result: dict[str, Any] = nix_eval(tmp_path, MODULE_CFG.replace("OVERRIDES", overrides))
    return result


def test_nix_module_declares_the_tabbyapi_style_options(tmp_path: Path) -> None:
    result = module_settings(tmp_path, "{ }")
    assert set(result["optionNames"]) >= {
        "enable", "package", "host", "port", "apiServers", "modelsDir", "models", "cacheMode", "draftModel",
        "loras", "auth", "logRequests", "logLevel", "logFormat", "environmentFiles", "user", "group", "dataDir",
        "extraSettings",
    }  # fmt: skip
    assert set(result["modelOptionNames"]) >= {
        "path", "ctx", "parallel", "gpuLayers", "cacheMode", "draftModel", "loras", "defaults"
    }  # fmt: skip
    assert result["loraDefaults"] == {"path": None, "scale": 1.0}


def test_nix_module_defaults_generate_somners_defaults(tmp_path: Path) -> None:
    generated = module_settings(tmp_path, "{ }")["settings"]
    assert Settings(**generated) == Settings()


def test_nix_module_options_map_onto_settings_somner_accepts(tmp_path: Path) -> None:
    generated = module_settings(
        tmp_path,
        """{
          host = "0.0.0.0"; port = 8080; healthPort = 8081; apiServers = [ "openai" "ollama" ];
          modelsDir = "/srv/models"; model = "chat"; cacheMode = "Q8"; draftModel = "/srv/models/draft.gguf";
          loras = [ { path = "/srv/loras/all.gguf"; scale = 1.0; } ];
          models = {
            chat = { path = "/srv/models/chat.gguf"; ctx = 8192; parallel = 8; gpuLayers = -1; aliases = [ "qwen" ];
                     ttl = "10m"; group = "gpu"; defaults = { temperature = 0.7; system = "Today is {date}."; }; };
            small = { cacheMode = "q4_0"; draftModel = "/srv/models/tiny.gguf"; pinned = true;
                      loras = [ { path = "/srv/loras/style.gguf"; scale = 0.5; } ];
                      extraSettings = { memory = "2GiB"; }; };
          };
          auth = { allowedHosts = [ "llm.internal" ]; adminKeyFile = "/run/secrets/somner-admin-key"; };
          logRequests = true; logLevel = "debug"; logFormat = "json";
          extraSettings = { groups.gpu.exclusive = true; limits.max_concurrent = 16; ttl = "15m"; };
        }""",
    )["settings"]
    settings = Settings(**generated)  # raises on any key Somner does not have
    assert (settings.host, settings.port, settings.health_port) == ("0.0.0.0", 8080, 8081)
    assert settings.api_servers == ["openai", "ollama"]
    assert str(settings.models_dir) == "/srv/models"
    assert settings.model == "chat"
    assert (settings.log_level, settings.log_format, settings.log_requests) == ("debug", "json", True)
    assert settings.auth.enabled is True
    assert settings.auth.allowed_hosts == ["llm.internal"]
    assert settings.auth.admin_key is None, "the key file is read at start, never copied into the config"
    assert settings.ttl == 900.0
    assert settings.limits.max_concurrent == 16
    assert settings.groups["gpu"].exclusive is True
    entries = {entry.id: entry for entry in settings.models}
    chat, small = entries["chat"], entries["small"]
    assert (chat.ctx, chat.parallel, chat.gpu_layers, chat.aliases, chat.ttl) == (8192, 8, -1, ["qwen"], 600.0)
    assert chat.cache_type == "q8_0", "the global cacheMode, in Somner's spelling"
    assert [(str(lora.path), lora.scale) for lora in chat.loras] == [("/srv/loras/all.gguf", 1.0)]
    assert chat.defaults is not None and chat.defaults.temperature == 0.7
    assert small.cache_type == "q4_0"
    assert (str(chat.draft_model), str(small.draft_model)) == ("/srv/models/draft.gguf", "/srv/models/tiny.gguf")
    assert small.pinned is True
    assert [(str(lora.path), lora.scale) for lora in small.loras] == [("/srv/loras/style.gguf", 0.5)]
    assert small.memory == 2 * 1024**3


def test_nix_module_accepts_tabbyapis_api_server_names(tmp_path: Path) -> None:
    """TabbyAPI's `api_servers` names (OAI, Kobold) mean Somner's openai and kobold; each dialect is listed once."""
    result = module_settings(tmp_path, '{ apiServers = [ "OAI" "Kobold" "openai" "ollama" "oai" ]; }')
    assert set(result["apiServerNames"]) >= {"openai", "ollama", "kobold", "anthropic", "tabby", "OAI", "Kobold"}
    assert set(result["apiServerNames"]) - {"OAI", "oai", "Kobold"} == set(get_args(ApiServer))
    settings = Settings(**result["settings"])
    assert settings.api_servers == ["openai", "kobold", "ollama"]
