"""The NixOS module (deploy/nix), evaluated by `nix-instantiate`, and the configuration it generates checked by
Somner's own settings model.

Debian's nix-bin brings no nixpkgs, so module_stub.nix evaluates the module with a stand-in for the parts of `lib` it
uses (checking option names, types, enums and ranges as NixOS would); where a nixpkgs is at hand (NIXPKGS_LIB naming
its `lib` directory, or <nixpkgs> on NIX_PATH), module_eval.nix evaluates it again with `lib.evalModules` and the real
option types. Either way: every option evaluates, what it generates validates as Somner settings, TabbyAPI's option
names map onto Somner's keys, clashes are assertions and options with no effect in Somner are warnings.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest

from somner.settings import ApiServer, Settings

REPO = Path(__file__).resolve().parents[2]
NIX_DIR = REPO / "deploy" / "nix"
HERE = Path(__file__).resolve().parent


def nix_instantiate() -> str:
    nix = shutil.which("nix-instantiate")
    if nix is None:
        pytest.skip("nix-instantiate is not installed (Debian package nix-bin)")
    return nix


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


def run_nix(tmp_path: Path, expression: str) -> subprocess.CompletedProcess[str]:
    args = [nix_instantiate(), "--eval", "--strict", "--json", "--expr", expression]
    return subprocess.run(
        args, cwd=NIX_DIR, env=nix_env(tmp_path), capture_output=True, text=True, timeout=120, check=False
    )


def nix_eval(tmp_path: Path, expression: str) -> Any:
    result = run_nix(tmp_path, expression)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def nix_string(path: Path | str) -> str:
    return json.dumps(str(path))


def nixpkgs_lib() -> Path | None:
    """nixpkgs' lib directory: NIXPKGS_LIB, else <nixpkgs>/lib when NIX_PATH has one."""
    named = os.environ.get("NIXPKGS_LIB")
    if named:
        return Path(named)
    nix = shutil.which("nix-instantiate")
    if nix is None or "NIX_PATH" not in os.environ:
        return None
    found = subprocess.run([nix, "--find-file", "nixpkgs"], capture_output=True, text=True, timeout=60, check=False)
    lib = Path(found.stdout.strip()) / "lib"
    return lib if found.returncode == 0 and (lib / "default.nix").is_file() else None


def stub_expression(overrides: str) -> str:
    return (
        f"import {nix_string(HERE / 'module_stub.nix')} "
        f"{{ moduleDir = {nix_string(NIX_DIR)}; overrides = {overrides}; }}"
    )


def nixpkgs_expression(overrides: str) -> str:
    lib = nixpkgs_lib()
    if lib is None:
        pytest.skip("no nixpkgs here: set NIXPKGS_LIB to a nixpkgs checkout's lib directory to evaluate with it")
    return (
        f"import {nix_string(HERE / 'module_eval.nix')} "
        f"{{ nixpkgsLib = {nix_string(lib)}; moduleDir = {nix_string(NIX_DIR)}; overrides = {overrides}; }}"
    )


class Module:
    """The module evaluated with `services.somner = { enable = true; } // overrides` (a Nix expression)."""

    def __init__(self, tmp_path: Path, evaluator: str) -> None:
        self.tmp_path = tmp_path
        self.expression = stub_expression if evaluator == "stub" else nixpkgs_expression

    def __call__(self, overrides: str = "{ }") -> dict[str, Any]:
        result: dict[str, Any] = nix_eval(self.tmp_path, self.expression(f"({{ enable = true; }} // {overrides})"))
        return result

    def error(self, overrides: str) -> str:
        """The evaluation error of a configuration NixOS must refuse."""
        result = run_nix(self.tmp_path, self.expression(f"({{ enable = true; }} // {overrides})"))
        assert result.returncode != 0, result.stdout
        return result.stderr


@pytest.fixture(params=["stub", "nixpkgs"])
def module(request: pytest.FixtureRequest, tmp_path: Path) -> Module:
    return Module(tmp_path, request.param)


@pytest.fixture
def stub(tmp_path: Path) -> Module:
    """The stand-in evaluation alone: it also lists the declared options."""
    return Module(tmp_path, "stub")


# -- the files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flake.nix", "module.nix", "settings.nix"])
def test_nix_file_parses(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [nix_instantiate(), "--parse", str(NIX_DIR / name)],
        env=nix_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_flake_exposes_the_module(tmp_path: Path) -> None:
    outputs = nix_eval(
        tmp_path,
        "let flake = import ./flake.nix; self = flake.outputs { inherit self; }; in "
        "{ names = builtins.attrNames self.nixosModules; "
        "modules = map builtins.isFunction [ self.nixosModules.default self.nixosModules.somner ]; }",
    )
    assert outputs == {"names": ["default", "somner"], "modules": [True, True]}


# -- every option --------------------------------------------------------------------------------------------------

# Every option the module declares, set (package aside: the evaluation supplies one). Some pairs name one Somner
# setting twice, in Somner's words and in TabbyAPI's: the module refuses those (CLASHES), yet still evaluates.
EVERY_OPTION = """{
  host = "0.0.0.0"; port = 5000; healthPort = 5001; openFirewall = true;
  apiServers = [ "OAI" "Kobold" "ollama" ]; extraArgs = [ "--workers" "2" "--log-level" "it's debug" ];
  modelsDir = "/srv/models"; model = "chat";
  models = {
    chat = {
      path = "/srv/models/chat.gguf"; aliases = [ "qwen" ]; ctx = 8192; parallel = 8; threads = 8; batch = 256;
      gpuLayers = -1; splitMode = "row"; mainGpu = 1; tensorSplit = [ 1 1 ]; flashAttn = "on";
      cacheMode = "Q8"; cacheTypeK = "q8_0"; cacheTypeV = "q4_0";
      draftModel = "/srv/models/draft.gguf"; draftTokens = 8; ropeScale = 0.5; ropeBase = 1000000;
      loras = [ { path = "/srv/loras/a.gguf"; scale = 0.8; } ]; template = "chatml"; ttl = "10m"; pinned = true;
      group = "gpu"; defaults = { temperature = 0.7; system = "Today is {date}."; };
      extraSettings = { memory = "6GiB"; };
    };
    small = { maxSeqLen = 2048; loras = [ { name = "style"; scaling = 0.5; } ]; };
    big = {
      backend = "exllamav3"; path = "/srv/exl3/Big-exl3"; cacheSize = 32768; gpuSplit = [ 20 20 ];
      tensorParallel = false;
    };
    wide = { backend = "exllamav3"; path = "/srv/exl3/Wide-exl3"; };
  };
  inlineModelLoading = false; useDummyModels = true; dummyModelNames = [ "gpt-4o" ]; promptTemplate = "llama3";
  vision = true;
  engine = {
    ctx = 4096; parallel = 2; batch = 512; threads = 4; gpuLayers = 20; splitMode = "layer"; mainGpu = 0;
    tensorSplit = [ 3 1 ]; flashAttn = "auto"; cacheTypeK = "f16"; cacheTypeV = "q8_0";
  };
  gpuMemoryFraction = 0.9; memoryBudget = "24GiB";
  maxSeqLen = 16384; cacheSize = 65536; maxBatchSize = 4; chunkSize = 1024; cacheMode = "Q4";
  gpuSplit = [ 24 16 ]; gpuSplitAuto = false; autosplitReserve = [ 256 256 ]; tensorParallel = true;
  draftModel = "/srv/models/draft.gguf"; draftModelDir = "/srv/drafts"; draftModelName = "tiny"; draftNumTokens = 6;
  draftCacheMode = "FP16"; draftRopeScale = 1.0; draftRopeAlpha = 2.0; draftGpuSplit = [ 1 ];
  loraDir = "/srv/loras";
  loras = [ { path = "/srv/loras/all.gguf"; scale = 0.9; } { name = "tone"; scaling = 0.4; } ];
  auth = {
    enable = true; adminKeyFile = "/run/secrets/somner-key"; allowedHosts = [ "llm.internal" ];
    corsOrigins = [ "https://chat.example.com" ];
  };
  logRequests = true; logPrompt = true; logGenerationParams = true; logLevel = "debug"; logFormat = "json";
  environmentFiles = [ "/run/secrets/somner.env" ]; user = "llm"; group = "llm"; dataDir = "/srv/somner";
  extraSettings = { groups.gpu.exclusive = true; limits.max_concurrent = 16; ttl = "15m"; };
}"""
CLASHES = [
    ("engine.ctx", "maxSeqLen"),
    ("engine.parallel", "maxBatchSize"),
    ("engine.batch", "chunkSize"),
    ("engine.tensorSplit", "gpuSplit"),
    ("engine.splitMode", "tensorParallel"),
    ("draftModel", "draftModelName"),
]
NO_EFFECT = [
    "vision",
    "inlineModelLoading",
    "logGenerationParams",
    "autosplitReserve",
    "draftCacheMode",
    "draftRopeScale/draftRopeAlpha",
    "draftGpuSplit",
]


def test_every_option_is_set_by_the_every_option_test(stub: Module) -> None:
    result = stub(EVERY_OPTION)
    assert set(result["options"]) - set(result["set"]) == {"package"}
    # Per model and per adapter too (`*`: any model id, any list element).
    assert {"models.*.maxSeqLen", "models.*.cacheTypeV", "models.*.loras.*.scaling", "loras.*.name"} <= set(
        result["options"]
    )


def test_every_option_evaluates_and_generates_settings_somner_accepts(module: Module) -> None:
    result = module(EVERY_OPTION)
    assert sorted(result["failed"]) == sorted(
        f"services.somner: {somner} and {tabby} set the same Somner setting; keep one." for somner, tabby in CLASHES
    )
    assert [warning.split(":")[0] for warning in result["warnings"]] == [f"services.somner.{n}" for n in NO_EFFECT]

    settings = Settings(**result["settings"])  # raises on any key or value Somner does not accept
    assert (settings.host, settings.port, settings.health_port) == ("0.0.0.0", 5000, 5001)
    assert settings.api_servers == ["openai", "kobold", "ollama"]
    assert (str(settings.models_dir), str(settings.loras_dir)) == ("/srv/models", "/srv/loras")
    assert (settings.log_level, settings.log_format, settings.log_requests) == ("debug", "json", True)
    assert settings.dummy_models == ["gpt-4o"]
    assert (settings.gpu_memory_fraction, settings.memory_budget) == (0.9, 24 * 1024**3)
    assert settings.auth.allowed_hosts == ["llm.internal"]
    assert settings.auth.cors_origins == ["https://chat.example.com"]
    assert settings.auth.admin_key is None, "the key file is read at start, never copied into the config"
    assert (settings.limits.max_concurrent, settings.ttl) == (16, 900), "extraSettings merged over the rest"
    # Where both vocabularies name a setting, Somner's own option is the one generated.
    engine = settings.engine
    assert (engine.ctx, engine.parallel, engine.batch, engine.threads, engine.gpu_layers) == (4096, 2, 512, 4, 20)
    assert (engine.split_mode, engine.main_gpu, engine.tensor_split, engine.flash_attn) == ("layer", 0, [3, 1], "auto")

    entries = {entry.id: entry for entry in settings.models}
    assert set(entries) == {"chat", "small", "big", "wide"}
    chat, small = entries["chat"], entries["small"]
    assert (chat.ctx, chat.parallel, chat.threads, chat.batch, chat.gpu_layers) == (8192, 8, 8, 256, -1)
    assert (chat.split_mode, chat.main_gpu, chat.tensor_split, chat.flash_attn) == ("row", 1, [1, 1], "on")
    assert (chat.cache_type, chat.cache_type_k, chat.cache_type_v) == ("q8_0", "q8_0", "q4_0")
    assert (str(chat.draft_model), chat.draft_tokens) == ("/srv/models/draft.gguf", 8)
    assert (chat.rope_scale, chat.rope_base, chat.template, chat.ttl, chat.pinned) == (0.5, 1e6, "chatml", 600, True)
    assert [(str(lora.path), lora.scale) for lora in chat.loras] == [("/srv/loras/a.gguf", 0.8)]
    assert chat.aliases == ["qwen"] and chat.group == "gpu" and chat.memory == 6 * 1024**3
    assert chat.defaults is not None and chat.defaults.temperature == 0.7
    # small sets little: the global per-model options fill the rest.
    assert small.ctx == 2048
    assert (small.cache_type, small.cache_type_k, small.cache_type_v) == ("q4_0", "f16", "q8_0")
    assert (str(small.draft_model), small.draft_tokens, small.template) == ("/srv/models/draft.gguf", 6, "llama3")
    assert [(str(lora.path), lora.scale) for lora in small.loras] == [("/srv/loras/style.gguf", 0.5)]
    # ExLlamaV3 models take TabbyAPI's split and cache options as they are, their own first.
    big, wide = entries["big"], entries["wide"]
    assert (big.kind, str(big.path)) == ("exllamav3", "/srv/exl3/Big-exl3")
    assert (big.cache_size, big.gpu_split, big.tensor_parallel) == (32768, [20, 20], False)
    assert (wide.cache_size, wide.gpu_split, wide.tensor_parallel) == (65536, [24, 16], True)
    assert "tensor_parallel" not in chat.model_fields_set, "llama.cpp models get engine.splitMode instead"

    # The service: extra arguments after the generated config, each one word; the data directory writable.
    command = shlex.split(result["script"].strip().splitlines()[-1])
    assert command[0] == "exec" and command[1].endswith("/bin/somner") and command[2:4] == ["serve", "--config"]
    assert command[5:] == ["--workers", "2", "--log-level", "it's debug"]
    assert 'SOMNER_ADMIN_KEY="$(< "$CREDENTIALS_DIRECTORY/admin-key")"' in result["script"]
    assert result["environment"]["SOMNER_DATA_DIR"] == "/srv/somner"
    assert result["environment"]["CUDA_CACHE_PATH"].startswith("/srv/somner/")
    service = result["serviceConfig"]
    assert (service["User"], service["ReadWritePaths"], service["PrivateDevices"]) == ("llm", ["/srv/somner"], False)
    assert service["LoadCredential"] == ["admin-key:/run/secrets/somner-key"]


def test_nix_module_defaults_generate_somners_defaults(module: Module) -> None:
    result = module()
    assert Settings(**result["settings"]) == Settings()
    assert result["failed"] == [] and result["warnings"] == []
    assert shlex.split(result["script"].strip())[-2:] == ["--config", shlex.split(result["script"].strip())[-1]]


def test_a_bad_value_is_refused(module: Module) -> None:
    # The control for the tests above: the evaluation does check option names and types.
    assert "splitMode" in module.error('{ engine.splitMode = "diagonal"; }')
    assert "cacheMode" in module.error('{ models.chat.cacheMode = "Q5"; }')
    assert "mainGpu" in module.error("{ models.chat.mainGpu = 99; }")
    assert "splitmode" in module.error('{ engine.splitmode = "row"; }')


# -- TabbyAPI's vocabulary ---------------------------------------------------------------------------------------


def test_a_tabbyapi_configuration_maps_onto_somners_settings(module: Module) -> None:
    result = module(
        """{
          host = "0.0.0.0"; apiServers = [ "OAI" "Kobold" ]; modelsDir = "/srv/models"; model = "chat";
          maxSeqLen = 8192; cacheSize = 32768; chunkSize = 1024; cacheMode = "Q8";
          gpuSplit = [ 24 12 ]; tensorParallel = true;
          draftModelName = "tiny"; draftNumTokens = 3; draftCacheMode = "Q8";
          loraDir = "/srv/loras"; loras = [ { name = "style"; scaling = 0.5; } ];
          promptTemplate = "chatml"; useDummyModels = true; dummyModelNames = [ "gpt-4o" "gpt-3.5-turbo" ];
          logPrompt = true;
        }"""
    )
    assert result["failed"] == [] and result["warnings"] == []
    settings = Settings(**result["settings"])
    assert settings.api_servers == ["openai", "kobold"]
    engine = settings.engine
    # cache_size 32768 over max_seq_len 8192: the same KV cache as 4 slots of 8192 tokens each.
    assert (engine.ctx, engine.parallel, engine.batch) == (8192, 4, 1024)
    assert (engine.tensor_split, engine.split_mode) == ([24, 12], "row")
    assert (settings.dummy_models, settings.log_requests) == (["gpt-4o", "gpt-3.5-turbo"], True)
    # The start model, named by id, gets the per-model options (TabbyAPI applies them to that model).
    (chat,) = settings.models
    assert (chat.id, chat.path, chat.cache_type, chat.template) == ("chat", None, "q8_0", "chatml")
    assert (str(chat.draft_model), chat.draft_tokens) == ("/srv/models/tiny.gguf", 3)
    assert [(str(lora.path), lora.scale) for lora in chat.loras] == [("/srv/loras/style.gguf", 0.5)]


def test_a_tabbyapi_configuration_for_an_exllamav3_model(module: Module) -> None:
    result = module(
        """{
          model = "big"; models.big = { backend = "exllamav3"; path = "/srv/exl3/Big-exl3"; };
          maxSeqLen = 16384; cacheSize = 65536; cacheMode = "Q6"; gpuSplit = [ 22 22 ]; tensorParallel = true;
          draftModelName = "Tiny-exl3"; loraDir = "/srv/loras"; loras = [ { name = "style"; } ];
        }"""
    )
    assert result["failed"] == [] and result["warnings"] == []
    settings = Settings(**result["settings"])
    (big,) = settings.models
    assert (big.kind, big.cache_type, big.cache_size, big.gpu_split, big.tensor_parallel) == (
        "exllamav3", "q6", 65536, [22, 22], True
    )  # fmt: skip
    # Draft models and adapters by name are folders here (EXL3 and PEFT), not GGUF files.
    assert (str(big.draft_model), [str(lora.path) for lora in big.loras]) == (
        "/var/lib/somner/models/Tiny-exl3",
        ["/srv/loras/style"],
    )
    assert big.missing() is None, "Somner would serve this entry as it is"
    assert (settings.engine.ctx, settings.engine.parallel) == (16384, 4)


@pytest.mark.parametrize(
    ("overrides", "engine"),
    [
        ("{ maxSeqLen = -1; }", {}),  # the model's own length: Somner's default
        ("{ cacheSize = 16384; }", {"ctx": 16384}),  # no max_seq_len: one sequence may use the whole cache
        ("{ maxSeqLen = -1; cacheSize = 16384; }", {"ctx": 16384}),
        ("{ cacheSize = 128; }", {}),  # below Somner's smallest ctx: left to the default
        ("{ maxSeqLen = 8192; cacheSize = 4096; }", {"ctx": 8192, "parallel": 1}),
        ("{ maxSeqLen = 256; cacheSize = 1048576; }", {"ctx": 256, "parallel": 256}),  # Somner's most slots
        ("{ maxBatchSize = 8; cacheSize = 65536; maxSeqLen = 4096; }", {"ctx": 4096, "parallel": 8}),
        ("{ gpuSplitAuto = false; }", {"split_mode": "none"}),  # one GPU: mainGpu
        ("{ gpuSplitAuto = false; gpuSplit = [ 20 4 ]; }", {"tensor_split": [20, 4]}),
        ("{ gpuSplitAuto = true; gpuSplit = [ ]; }", {}),  # autosplit: llama.cpp spreads by each GPU's memory
        ("{ tensorParallel = true; engine.mainGpu = 1; }", {"split_mode": "row", "main_gpu": 1}),
        ('{ engine.gpuLayers = 0; engine.flashAttn = "off"; }', {"gpu_layers": 0, "flash_attn": "off"}),
    ],
)
def test_tabbyapi_engine_options(module: Module, overrides: str, engine: dict[str, Any]) -> None:
    result = module(overrides)
    assert result["failed"] == []
    assert result["settings"].get("engine", {}) == engine
    Settings(**result["settings"])


def test_per_model_options_reach_only_models_by_id(module: Module) -> None:
    by_path = module('{ model = "/srv/models/chat.gguf"; cacheMode = "Q4"; promptTemplate = "chatml"; }')
    assert "models" not in by_path["settings"]
    (warning,) = by_path["warnings"]
    assert warning.startswith("services.somner: cacheMode, promptTemplate: Somner keeps these per model")
    # An entry (or an alias) for the start model is not made twice.
    aliased = module('{ model = "qwen"; cacheMode = "Q4"; models.chat.aliases = [ "qwen" ]; }')
    assert [entry["id"] for entry in aliased["settings"]["models"]] == ["chat"]
    Settings(**aliased["settings"])


def test_a_draft_cache_mode_like_its_models_is_no_warning(module: Module) -> None:
    assert module('{ draftCacheMode = "f16"; }')["warnings"] == []
    assert module('{ model = "chat"; cacheMode = "q4_0"; draftCacheMode = "Q4"; }')["warnings"] == []
    (warning,) = module('{ draftCacheMode = "Q8"; }')["warnings"]
    assert warning.startswith("services.somner.draftCacheMode: ")


def test_a_models_own_empty_lora_list_wins(module: Module) -> None:
    result = module('{ loras = [ { path = "/srv/a.gguf"; } ]; models.plain.loras = [ ]; models.other = { }; }')
    entries = {entry["id"]: entry for entry in result["settings"]["models"]}
    assert entries["plain"]["loras"] == []
    assert entries["other"]["loras"] == [{"path": "/srv/a.gguf", "scale": 1.0}]


def test_clashing_and_incomplete_options_are_refused(module: Module) -> None:
    result = module(
        """{ maxSeqLen = 100; engine.splitMode = "none"; gpuSplitAuto = false; loras = [ { scale = 0.5; } ];
             models.chat = { ctx = 512; maxSeqLen = 512; loras = [ { path = "/a.gguf"; name = "a"; } ]; };
             models.small.maxSeqLen = 0; models.long.maxSeqLen = -1; }"""
    )
    assert sorted(result["failed"]) == sorted(
        [
            "services.somner.maxSeqLen: -1 (the model's own) or at least 256 tokens.",
            "services.somner.models.small.maxSeqLen: -1 (the model's own) or at least 256 tokens.",
            "services.somner: engine.splitMode and gpuSplitAuto set the same Somner setting; keep one.",
            "services.somner: models.chat.ctx and models.chat.maxSeqLen set the same Somner setting; keep one.",
            "services.somner: each LoRA needs exactly one of `path` and `name`.",
            "services.somner: each LoRA needs exactly one of `path` and `name`.",
        ]
    )


def test_nix_module_accepts_tabbyapis_api_server_names(stub: Module) -> None:
    """TabbyAPI's `api_servers` names (OAI, Kobold) mean Somner's openai and kobold; each dialect is listed once."""
    result = stub('{ apiServers = [ "OAI" "Kobold" "openai" "ollama" "oai" ]; }')
    assert set(result["apiServerNames"]) >= {"openai", "ollama", "kobold", "anthropic", "tabby", "OAI", "Kobold"}
    assert set(result["apiServerNames"]) - {"OAI", "oai", "Kobold"} == set(get_args(ApiServer))
    settings = Settings(**result["settings"])
    assert settings.api_servers == ["openai", "kobold", "ollama"]


def test_nix_module_declares_the_tabbyapi_style_options(stub: Module) -> None:
    options = set(stub()["options"])
    tabby = {
        "host", "port", "apiServers", "modelsDir", "model", "maxSeqLen", "cacheSize", "maxBatchSize", "chunkSize",
        "cacheMode", "gpuSplit", "gpuSplitAuto", "autosplitReserve", "tensorParallel", "promptTemplate", "vision",
        "inlineModelLoading", "useDummyModels", "dummyModelNames", "draftModelDir", "draftModelName",
        "draftNumTokens", "draftCacheMode", "draftRopeScale", "draftRopeAlpha", "draftGpuSplit", "loraDir",
        "loras.*.name", "loras.*.scaling", "logPrompt", "logGenerationParams", "logRequests", "extraArgs",
        "environmentFiles", "user", "group", "dataDir",
    }  # fmt: skip
    somner = {
        "engine.gpuLayers", "engine.splitMode", "engine.mainGpu", "engine.tensorSplit", "engine.flashAttn",
        "engine.cacheTypeK", "engine.cacheTypeV", "engine.ctx", "engine.parallel", "engine.batch",
        "gpuMemoryFraction", "memoryBudget", "models.*.ctx", "models.*.maxSeqLen", "models.*.gpuLayers",
        "models.*.splitMode", "models.*.mainGpu", "models.*.tensorSplit", "models.*.flashAttn", "models.*.cacheMode",
        "models.*.cacheTypeK", "models.*.cacheTypeV", "models.*.draftModel", "models.*.draftTokens",
        "models.*.loras.*.path", "extraSettings",
    }  # fmt: skip
    assert tabby | somner <= options


def test_the_readme_example_generates_settings_somner_accepts(module: Module) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    gpu = readme[readme.index("\n## GPU\n") :]
    example = gpu[gpu.index("\n### NixOS\n") :]
    start = example.index("```nix\n") + len("```nix\n")
    block = example[start : example.index("\n```", start)]
    assert block.startswith("services.somner = {") and block.endswith("};")
    package = (
        '{ type = "derivation"; name = "somner"; outPath = "/nix/store/00000000000000000000000000000000-somner"; }'
    )
    overrides = f"(let somner-cuda = {package}; in {block.removeprefix('services.somner = ').removesuffix(';')})"
    result = module(overrides)
    assert result["failed"] == [] and result["warnings"] == []
    settings = Settings(**result["settings"])
    assert (settings.engine.ctx, settings.engine.parallel, settings.engine.batch) == (16384, 4, 1024)
    entries = {entry.id: entry for entry in settings.models}
    assert set(entries) == {"qwen", "big"}
    assert entries["big"].missing() is None and entries["big"].gpu_split == [24, 16]
