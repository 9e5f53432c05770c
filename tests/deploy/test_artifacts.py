"""Every deployment artifact under deploy/, checked by the tool that consumes it.

Each check skips, naming the tool and its Debian package, where the tool is missing (`.ci/run` installs them).
Beyond "the tool accepts it", each test asserts what the artifact promises: the Dockerfiles run as a non-root user
with a health check and no secret, the compose file runs one Somner per profile (cpu, or gpu with the NVIDIA GPUs
reserved) and hardens every service, the Tailscale policy sample opens HTTPS to one group, `make setup GPU=cuda`
compiles llama.cpp with CUDA afresh, and the unit is hardened. The NixOS module: test_nix_module.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from somner.settings import EngineSettings, Settings, load_settings, unknown_environment_keys

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


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
    # The wheels alone are a stage of their own (`--target wheelhouse --output ...` exports them for offline
    # installs), and the final stage installs from exactly that stage.
    (wheelhouse,) = [stage for stage in built if stage[0].arguments.split() == ["scratch", "AS", "wheelhouse"]]
    assert [(i.keyword, i.arguments) for i in wheelhouse[1:]] == [("COPY", "--from=builder /wheels /")]
    installs = [i.arguments for i in final if i.keyword == "RUN" and "pip install" in i.arguments]
    assert len(installs) == 1
    assert installs[0].startswith("--mount=type=bind,from=wheelhouse,target=/wheels ")
    assert "--no-index --find-links /wheels" in installs[0]
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


def compose_config(compose_project: Path, tmp_path: Path, *profiles: str) -> dict[str, Any]:
    """`config` as the tool resolves it (env files read, paths made absolute), for the profiles given.

    docker-compose 1.x prints every service whatever the profiles; 2.x only the active ones: `active_services`
    decides which run, by the rules both versions share."""
    command = compose_command()
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run([*command, "-f", "compose.yaml", *flags, "config"], cwd=compose_project, env=compose_env(tmp_path))
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def active_services(services: dict[str, Any], profiles: set[str]) -> set[str]:
    """Services `up` starts for these profiles: those without profiles, and those with one of them."""
    return {
        name for name, service in services.items() if not service.get("profiles") or profiles & set(service["profiles"])
    }


# Every profile combination the header of compose.yaml tells operators to use, as COMPOSE_PROFILES or --profile.
PROFILE_SETS = [{"cpu"}, {"gpu"}, {"cpu", "tailscale"}, {"gpu", "tailscale"}]


def test_compose_file_is_valid_with_the_example_env_files(compose_project: Path, tmp_path: Path) -> None:
    command = compose_command()
    env = compose_env(tmp_path)
    for profiles in ([], ["gpu"], ["cpu", "tailscale"], ["gpu", "tailscale"]):
        flags = [arg for profile in profiles for arg in ("--profile", profile)]
        quiet = run([*command, "-f", "compose.yaml", *flags, "config", "-q"], cwd=compose_project, env=env)
        assert quiet.returncode == 0, f"{profiles}: {quiet.stderr}"
    services: dict[str, Any] = compose_config(compose_project, tmp_path, "cpu", "tailscale")["services"]
    assert set(services) >= {"somner", "postgres", "redis", "caddy", "tailscale"}

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
    assert somner["profiles"] == ["cpu"]

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


def test_compose_profiles_run_exactly_one_somner(compose_project: Path, tmp_path: Path) -> None:
    # A plain `up` is the CPU one (deploy/.env), and `--profile gpu` (which replaces that default) the GPU one alone.
    assert read_env_file(DEPLOY / ".env") == {"COMPOSE_PROFILES": "cpu"}
    services: dict[str, Any] = compose_config(compose_project, tmp_path, "cpu", "gpu", "tailscale")["services"]
    assert set(services) == {"somner", "somner-gpu", "postgres", "redis", "caddy", "tailscale"}
    for profiles in PROFILE_SETS:
        active = active_services(services, profiles)
        assert len(active & {"somner", "somner-gpu"}) == 1, profiles
        assert {"postgres", "redis", "caddy"} <= active
        assert ("tailscale" in active) == ("tailscale" in profiles)
        for name in active:
            # Compose refuses to start a service whose dependency is in a profile that is not active.
            assert set(services[name].get("depends_on", {})) <= active, f"{name} under {profiles}"
    # Caddy's Caddyfile and Tailscale's serve.json proxy to "somner:8000": the GPU service answers to that name too.
    assert "somner" in services["somner-gpu"]["networks"]["default"]["aliases"]


def test_compose_gpu_profile_reserves_the_nvidia_gpus(compose_project: Path, tmp_path: Path) -> None:
    services: dict[str, Any] = compose_config(compose_project, tmp_path, "gpu", "cpu")["services"]
    gpu, cpu = services["somner-gpu"], services["somner"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    assert Path(gpu["build"]["context"]) == compose_project.parent
    assert gpu["image"] != cpu["image"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    # (docker compose 2.x writes "all" as -1)
    assert [{**device, "count": str(device["count"])} for device in devices] in (
        [{"driver": "nvidia", "count": count, "capabilities": ["gpu"]}] for count in ("all", "-1")
    )
    assert gpu["environment"]["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "compute" in gpu["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    # The compose default for the architectures is the Dockerfile's own.
    dockerfile_args = dict(
        pair
        for i in parse_dockerfile((DEPLOY / "Dockerfile.cuda").read_text(encoding="utf-8"))
        if i.keyword == "ARG"
        for pair in env_pairs(i)
    )
    assert gpu["build"]["args"]["CUDA_ARCHITECTURES"] == dockerfile_args["CUDA_ARCHITECTURES"]
    # Everything else as the CPU service: same data volume, env file, dependencies, hardening.
    for key in ("volumes", "depends_on", "tmpfs", "cap_drop", "security_opt", "read_only", "stop_grace_period"):
        assert gpu[key] == cpu[key], key
    assert gpu["environment"]["SOMNER_DATABASE__URL"] == cpu["environment"]["SOMNER_DATABASE__URL"]
    assert "deploy" not in cpu


# What each service may add back after dropping every capability, and why (compose.yaml says it at each).
ADDED_CAPABILITIES = {"caddy": ["NET_BIND_SERVICE"]}  # ports 80/443, and the file capability on its binary
# Where each service writes: volumes for state, tmpfs for scratch; everything else is the read-only image.
WRITABLE = {
    "somner": ({"/data"}, {"/tmp"}),
    "somner-gpu": ({"/data"}, {"/tmp"}),
    "postgres": ({"/var/lib/postgresql/data"}, {"/var/run/postgresql", "/tmp"}),
    "redis": ({"/data"}, set()),
    "caddy": ({"/data", "/config"}, {"/tmp"}),
    "tailscale": ({"/var/lib/tailscale"}, {"/tmp"}),
}


def volume_targets(service: dict[str, Any]) -> set[str]:
    """Writable mount points (read-only bind mounts such as the Caddyfile left out)."""
    targets = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if not volume.get("read_only"):
                targets.add(volume["target"])
            continue
        parts = str(volume).split(":")
        if parts[-1] == "ro":
            continue
        targets.add(parts[1] if len(parts) > 1 else parts[0])
    return targets


def test_compose_services_are_hardened(compose_project: Path, tmp_path: Path) -> None:
    services: dict[str, Any] = compose_config(compose_project, tmp_path, "gpu", "cpu", "tailscale")["services"]
    assert set(services) == set(WRITABLE)
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"], name
        assert service.get("cap_add", []) == ADDED_CAPABILITIES.get(name, []), name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["read_only"] is True, name
        assert service.get("privileged") is not True and "devices" not in service, name
        assert "network_mode" not in service and "pid" not in service, f"{name} shares no host namespace"
        volumes, scratch = WRITABLE[name]
        assert volume_targets(service) == volumes, name
        assert {entry.split(":")[0] for entry in service.get("tmpfs", [])} == scratch, name
        assert service["restart"] == "unless-stopped", name
        if "build" in service:
            # Somner's health check is the image's own (HEALTHCHECK on /ping, checked with the Dockerfiles).
            dockerfile = parse_dockerfile((compose_project.parent / service["build"]["dockerfile"]).read_text())
            assert any(i.keyword == "HEALTHCHECK" for i in stages(dockerfile)[-1]), name
        else:
            assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
    # The images that start as root and switch users (gosu) run as that user from the start instead.
    assert (services["postgres"]["user"], services["redis"]["user"]) == ("postgres", "redis")
    # Tailscale in userspace mode: no TUN device, no NET_ADMIN.
    assert services["tailscale"]["environment"]["TS_USERSPACE"] == "true"
    socket = services["tailscale"]["environment"]["TS_SOCKET"]
    assert f"--socket={socket}" in services["tailscale"]["healthcheck"]["test"]


def test_compose_refuses_a_bad_hardening_value(compose_project: Path, tmp_path: Path) -> None:
    # The control for the tests above: the tool does check these keys, so a typo cannot pass as hardening.
    compose = compose_project / "compose.yaml"
    text = compose.read_text(encoding="utf-8")
    assert text.count("read_only: true") == 1, "one anchor (x-hardening) carries it for every service"
    compose.write_text(text.replace("read_only: true", "read_only: mostly"), encoding="utf-8")
    result = run(
        [*compose_command(), "-f", "compose.yaml", "config", "-q"], cwd=compose_project, env=compose_env(tmp_path)
    )
    assert result.returncode != 0
    assert "read_only" in result.stderr


def test_compose_file_holds_no_secret() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    for name, service in config["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            assert not SECRET_NAME.search(key), f"{name}: {key} belongs in an env file"
            assert "sk-somner-" not in str(value)
    assert "POSTGRES_PASSWORD" not in text and "TS_AUTHKEY=" not in text
    for key in read_env_file(DEPLOY / ".env"):
        assert not SECRET_NAME.search(key), f"deploy/.env is committed: {key} belongs in an env file"


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


def hujson(text: str) -> Any:
    """HuJSON (JSON with comments and trailing commas, Tailscale's policy format) read as JSON."""
    out: list[str] = []
    i, in_string = 0, False
    while i < len(text):
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(text[i + 1])
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(char)
        i += 1
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", "".join(out)))


def test_hujson_reader_keeps_strings_whole() -> None:
    assert hujson('{"a": "x // y", /* c */ "b": [1, 2,], // d\n}') == {"a": "x // y", "b": [1, 2]}


def test_tailscale_acl_sample_lets_only_its_group_reach_https() -> None:
    policy = hujson((DEPLOY / "tailscale-acl.hujson").read_text(encoding="utf-8"))
    assert set(policy) <= {"groups", "tagOwners", "acls", "ssh", "tests"}
    (tag,) = policy["tagOwners"]
    assert tag.startswith("tag:")
    assert policy["acls"], "a policy without rules would cut everyone off"
    for rule in policy["acls"]:
        assert rule["action"] == "accept"
        assert all(src.startswith("group:") and src in policy["groups"] for src in rule["src"])
        assert rule["dst"] == [f"{tag}:443"], "HTTPS (tailscale-serve.json) and nothing else"
    assert policy["ssh"] == []
    accepted = {dst for test in policy["tests"] for dst in test.get("accept", [])}
    denied = {dst for test in policy["tests"] for dst in test.get("deny", [])}
    assert accepted == {f"{tag}:443"}
    assert f"{tag}:8000" in denied and f"{tag}:443" in denied, "another user, and Somner's own port, are refused"
    assert tag in (DEPLOY / "tailscale.env.example").read_text(encoding="utf-8")
    assert "443" in json.loads((DEPLOY / "tailscale-serve.json").read_text(encoding="utf-8"))["TCP"]


# -- make setup GPU=cuda -----------------------------------------------------------------------------------------


def make_dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The commands `make` would run (-n), with the virtualenv in tmp_path, so nothing is installed or built."""
    make = require("make", "make")
    env = {k: v for k, v in os.environ.items() if k not in {"GPU", "LLAMA_CMAKE_ARGS", "CUDA_ARCHITECTURES"}}
    return run([make, "-n", "-C", str(REPO), f"VENV={tmp_path / 'venv'}", *args], env=env)


def llama_pin() -> str:
    dependencies: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    return next(d for d in dependencies if d.startswith("llama-cpp-python"))


def test_make_setup_gpu_cuda_compiles_llama_cpp_with_cuda_afresh(tmp_path: Path) -> None:
    result = make_dry_run(tmp_path, "setup", "GPU=cuda")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.replace("\\\n", " ").splitlines()
    somner = next(i for i, line in enumerate(lines) if "pip install" in line and "-e '.[default-model]'" in line)
    cuda = next(i for i, line in enumerate(lines) if "-DGGML_CUDA=on" in line)
    assert somner < cuda, "CUDA's llama-cpp-python replaces the CPU one Somner's install brought"
    words = shlex.split(lines[cuda])
    assert words[0] == "CMAKE_ARGS=-DGGML_CUDA=on"
    assert words[1] == f"{tmp_path}/venv/bin/pip" and words[2] == "install"
    # From source, never from pip's cache of built wheels (the CPU build), replacing the installed one.
    assert {"--no-cache-dir", "--force-reinstall", "--no-deps"} <= set(words)
    assert words[words.index("--no-binary") + 1] == "llama-cpp-python"
    assert words[-1] == llama_pin()
    check = lines[cuda + 1]
    assert "libggml-cuda" in check, "the build is checked for the CUDA backend"


def test_make_setup_without_gpu_builds_for_the_cpu(tmp_path: Path) -> None:
    result = make_dry_run(tmp_path, "setup")
    assert result.returncode == 0, result.stderr
    assert "-e '.[default-model]'" in result.stdout
    assert "GGML_CUDA" not in result.stdout and "libggml-cuda" not in result.stdout


def test_make_gpu_options(tmp_path: Path) -> None:
    archs = make_dry_run(tmp_path, "setup", "GPU=cuda", "CUDA_ARCHITECTURES=86;89")
    assert 'CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=86;89"' in archs.stdout
    wheelhouse = make_dry_run(tmp_path, "wheelhouse", "GPU=cuda")
    assert wheelhouse.returncode == 0, wheelhouse.stderr
    command = next(line for line in wheelhouse.stdout.replace("\\\n", " ").splitlines() if "pip wheel" in line)
    assert command.startswith('CMAKE_ARGS="-DGGML_CUDA=on" PIP_NO_CACHE_DIR=1 '), command
    assert "--no-binary llama-cpp-python" in command
    plain = make_dry_run(tmp_path, "wheelhouse")
    assert "GGML_CUDA" not in plain.stdout and "--no-binary" not in plain.stdout
    unknown = make_dry_run(tmp_path, "setup", "GPU=rocm")
    assert unknown.returncode != 0
    assert "GPU=rocm is not supported" in unknown.stderr


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
