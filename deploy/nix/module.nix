# NixOS module for Somner: `services.somner`. The options follow TabbyAPI's NixOS module (host, port, API servers,
# model directory, max sequence length, cache mode and size, GPU split and autosplit, tensor parallelism, chunk size,
# draft model, LoRAs, vision, inline loading, dummy models, logging toggles, extra arguments, environment files,
# user and group) beside Somner's own engine options (`engine.*`: GPU layers, split mode, main GPU, flash attention,
# KV cache types) and per-model entries (`models.<id>`). ./settings.nix maps them onto Somner's YAML configuration;
# `extraSettings` passes any other Somner key through unchanged (see `somner config example`). Somner rejects unknown
# keys, so nothing here invents one: a TabbyAPI option with no Somner counterpart is accepted, documented as what it
# means here, and warned about when set to anything that would change TabbyAPI's behaviour.
# Secrets never enter the Nix store: the admin key is read from `auth.adminKeyFile` at start (systemd
# credential), a PostgreSQL URL belongs in one of `environmentFiles` as SOMNER_DATABASE__URL=...
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    escapeShellArgs
    mkEnableOption
    mkIf
    mkOption
    optional
    optionalString
    types
    ;

  cfg = config.services.somner;
  format = pkgs.formats.yaml { };
  configFile = format.generate "somner.yaml" (import ./settings.nix { inherit cfg; });
  defaultDataDir = "/var/lib/somner";

  # KV cache precision: Somner's names and TabbyAPI's (FP16, Q8, Q4); Q6 is ExLlamaV3's only.
  cacheModes = [ "FP16" "Q8" "Q6" "Q4" "f16" "q8_0" "q6" "q4_0" ];
  splitModes = [ "none" "layer" "row" ];
  flashAttnModes = [ "auto" "on" "off" ];

  nullOption =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  loraType = types.submodule {
    options = {
      path = nullOption types.str "LoRA adapter (a GGUF file). Give this or `name`.";
      name = nullOption types.str ''
        TabbyAPI's way, an adapter of `loraDir` by name: the file `<name>.gguf` for llama.cpp models, the folder
        `<name>` for ExLlamaV3 ones. Give this or `path`.
      '';
      scale = mkOption {
        type = types.number;
        default = 1.0;
        description = "Strength of the adapter.";
      };
      scaling = nullOption types.number "TabbyAPI's name for `scale` (wins when set).";
    };
  };

  modelType = types.submodule {
    options = {
      path = nullOption types.str ''
        GGUF file, or an EXL3 model folder (backend exllamav3). Null: a `<id>.gguf` of the models directory, tuned
        by this entry.
      '';
      backend = nullOption (types.enum [ "worker" "exllamav3" "process" "upstream" "pool" ]) ''
        The engine: worker (llama.cpp, for a GGUF), exllamav3 (Somner's ExLlamaV3 engine, for an EXL3 folder: what
        TabbyAPI serves; needs somner[exl3] and a CUDA GPU), process, upstream or pool. Default: inferred from the
        keys given (worker for a path).
      '';
      aliases = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "More names that reach this model.";
      };
      ctx = nullOption types.ints.positive ''
        Context tokens per sequence (Somner's `ctx`; at least 256). Default: engine.ctx.
      '';
      maxSeqLen = nullOption types.int "TabbyAPI's name for `ctx` (-1: the model's own, Somner's default).";
      parallel = nullOption (types.ints.between 1 256) ''
        Sequences decoded together (slots); the KV cache holds ctx x parallel tokens.
      '';
      threads = nullOption types.ints.positive "CPU threads for llama.cpp.";
      batch = nullOption types.ints.positive "Prompt tokens per scheduling step (at least 32).";
      gpuLayers = nullOption types.int "Layers offloaded to the GPUs; -1 means all. Default: engine.gpuLayers.";
      splitMode = nullOption (types.enum splitModes) "How this model spreads over the GPUs. Default: engine.splitMode.";
      mainGpu = nullOption (types.ints.between 0 63) "The GPU for split mode none. Default: engine.mainGpu.";
      tensorSplit = nullOption (types.listOf types.number) "Share of the model per GPU. Default: engine.tensorSplit.";
      flashAttn = nullOption (types.enum flashAttnModes) "Flash attention (auto, on, off). Default: engine.flashAttn.";
      cacheMode = nullOption (types.enum cacheModes) ''
        KV cache precision (Somner's `cache_type`). Default: the global cacheMode.
      '';
      cacheTypeK = nullOption (types.enum cacheModes) ''
        The keys' cache precision (over cacheMode). Default: engine.cacheTypeK.
      '';
      cacheTypeV = nullOption (types.enum cacheModes) ''
        The values' cache precision (over cacheMode; quantized needs flash attention). Default: engine.cacheTypeV.
      '';
      draftModel = nullOption types.str ''
        Draft model (GGUF, same vocabulary) for speculative decoding. Default: the global draft model.
      '';
      draftTokens = nullOption (types.ints.between 1 32) ''
        Most guesses per sequence and step (Somner's `draft_tokens`). Default: draftNumTokens, else 4.
      '';
      cacheSize = nullOption types.ints.positive ''
        exllamav3: KV cache tokens shared by all sequences, a multiple of 256 (TabbyAPI's cache_size). Default: the
        global cacheSize.
      '';
      gpuSplit = nullOption (types.listOf types.number) ''
        exllamav3: GB of VRAM per GPU, in order (TabbyAPI's gpu_split). Default: the global gpuSplit, else autosplit.
      '';
      tensorParallel = nullOption types.bool ''
        exllamav3: split every layer over the GPUs (TabbyAPI's tensor_parallel). Default: the global tensorParallel.
      '';
      ropeScale = nullOption types.number "RoPE frequency scale (llama.cpp's: 0.25 stretches the context 4 times).";
      ropeBase = nullOption types.number "RoPE frequency base.";
      loras = nullOption (types.listOf loraType) "LoRA adapters for this model ([ ]: none). Default: the global loras.";
      template = nullOption types.str ''
        Chat template: gemma, llama3, chatml, mistral, phi3, or a Jinja file's path. Default: promptTemplate.
      '';
      ttl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10m";
        description = "Unload after this long without requests.";
      };
      pinned = mkOption {
        type = types.bool;
        default = false;
        description = "Never unload this model.";
      };
      group = nullOption types.str "Swap group (define it with extraSettings.groups).";
      defaults = mkOption {
        type = types.attrsOf format.type;
        default = { };
        example = {
          temperature = 0.7;
          system = "Today is {date}.";
        };
        description = "Request defaults, with Somner's key names (temperature, top_p, max_tokens, system, ...).";
      };
      extraSettings = mkOption {
        type = types.attrsOf format.type;
        default = { };
        description = "Further keys of this model's entry, passed through (e.g. command, urls, memory).";
      };
    };
  };

  # Each pair names one Somner key twice (Somner's option first, TabbyAPI's second): set at most one of them.
  twoNames =
    [
      [ "engine.ctx" cfg.engine.ctx "maxSeqLen" cfg.maxSeqLen ]
      [ "engine.parallel" cfg.engine.parallel "maxBatchSize" cfg.maxBatchSize ]
      [ "engine.batch" cfg.engine.batch "chunkSize" cfg.chunkSize ]
      [ "engine.tensorSplit" cfg.engine.tensorSplit "gpuSplit" (if cfg.gpuSplit == [ ] then null else cfg.gpuSplit) ]
      [ "engine.splitMode" cfg.engine.splitMode "tensorParallel" (if cfg.tensorParallel then true else null) ]
      [
        "engine.splitMode"
        cfg.engine.splitMode
        "gpuSplitAuto"
        (if !cfg.gpuSplitAuto && cfg.gpuSplit == [ ] then false else null)
      ]
      [ "draftModel" cfg.draftModel "draftModelName" cfg.draftModelName ]
    ]
    ++ lib.concatLists (
      lib.mapAttrsToList (id: model: [
        [ "models.${id}.ctx" model.ctx "models.${id}.maxSeqLen" model.maxSeqLen ]
      ]) cfg.models
    );

  # Options kept for TabbyAPI configurations that have no effect in Somner, with what to know when one is set.
  cacheName =
    mode:
    {
      FP16 = "f16";
      Q8 = "q8_0";
      Q4 = "q4_0";
    }
    .${mode} or mode;
  draftCacheDiffers =
    cfg.draftCacheMode != null
    && cacheName cfg.draftCacheMode != cacheName (if cfg.cacheMode != null then cfg.cacheMode else "f16");
  noEffect = [
    [ cfg.vision "vision: Somner serves text models; requests with images are refused." ]
    [
      (!cfg.inlineModelLoading)
      ("inlineModelLoading: Somner always loads the model a request names; limit who may use which with the keys' "
        + "model lists (`somner keys create --models a,b`).")
    ]
    [
      cfg.logGenerationParams
      "logGenerationParams: Somner logs one line per request without its sampler values; nothing more is logged."
    ]
    [
      (cfg.autosplitReserve != [ 96 ])
      ("autosplitReserve: llama.cpp places the layers; what loaded models may use of each GPU is "
        + "gpuMemoryFraction (default 0.8).")
    ]
    [
      draftCacheDiffers
      "draftCacheMode: a draft model's KV cache has its model's cache types (cacheMode, cacheTypeK/V)."
    ]
    [
      (cfg.draftRopeScale != null || cfg.draftRopeAlpha != null)
      "draftRopeScale/draftRopeAlpha: a draft model shares its model's RoPE settings."
    ]
    [
      (cfg.draftGpuSplit != [ ])
      "draftGpuSplit: a draft model is spread over the GPUs like its model (splitMode, tensorSplit)."
    ]
  ];

  # Global per-model options reach `models` entries (and the start model, named by id); with neither they are lost.
  perModelGlobals = lib.filter (name: name != null) [
    (if cfg.cacheMode != null then "cacheMode" else null)
    (if cfg.engine.cacheTypeK != null then "engine.cacheTypeK" else null)
    (if cfg.engine.cacheTypeV != null then "engine.cacheTypeV" else null)
    (if cfg.draftModel != null || cfg.draftModelName != null then "draftModel" else null)
    (if cfg.draftNumTokens != null then "draftNumTokens" else null)
    (if cfg.promptTemplate != null then "promptTemplate" else null)
    (if cfg.loras != [ ] then "loras" else null)
  ];
  modelList = lib.attrValues cfg.models;
  startModelIsId =
    cfg.model != null && builtins.match ".*/.*" cfg.model == null && builtins.match ".*\\.gguf" cfg.model == null;
in
{
  options.services.somner = {
    enable = mkEnableOption "Somner, a self-hosted LLM server and gateway";

    package = mkOption {
      type = types.package;
      description = ''
        A package providing bin/somner, e.g. a Python environment installed from Somner's wheelhouse
        (`make wheelhouse`, `make wheelhouse GPU=cuda` for NVIDIA GPUs). Somner is not in nixpkgs. For GPUs, its
        llama.cpp must find the driver's libcuda (/run/opengl-driver/lib on NixOS).
      '';
    };

    host = mkOption {
      type = types.str;
      default = "127.0.0.1";
      description = "Address to listen on; loopback by default.";
    };
    port = mkOption {
      type = types.port;
      default = 8000;
      description = "TCP port of the API (TabbyAPI's default is 5000).";
    };
    healthPort = nullOption types.port "A second port serving only /ping, /health and /ready.";
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the API port (and the health port) in the firewall.";
    };
    apiServers = mkOption {
      # TabbyAPI's names for its servers (OAI, Kobold; any letter case there) are accepted too.
      type = types.listOf (types.enum [ "openai" "ollama" "kobold" "anthropic" "tabby" "OAI" "oai" "Kobold" ]);
      default = [ "openai" "ollama" "kobold" "anthropic" "tabby" ];
      description = ''
        API dialects served: openai, ollama, kobold, anthropic, tabby (TabbyAPI's own names OAI and Kobold mean openai
        and kobold).
      '';
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--workers" "2" ];
      description = "More arguments for `somner serve` (after `--config`; see `somner serve --help`).";
    };

    # -- models ------------------------------------------------------------------------------------------------------
    modelsDir = nullOption types.str ''
      Directory scanned for *.gguf files (TabbyAPI's modelDir; default: <dataDir>/models). Read-only to the service.
    '';
    model = nullOption types.str "A model id or GGUF path loaded at start (TabbyAPI's modelName).";
    models = mkOption {
      type = types.attrsOf modelType;
      default = { };
      description = "Per-model settings, by model id (Somner's `models:` entries).";
    };
    inlineModelLoading = mkOption {
      type = types.bool;
      default = true;
      description = ''
        TabbyAPI's switch for loading the model a request names. Somner always does (every model of the models
        directory and of `models` can be asked for; keys' model lists limit who may use which); false is warned about.
      '';
    };
    useDummyModels = mkOption {
      type = types.bool;
      default = false;
      description = "Serve `dummyModelNames` (Somner's `dummy_models`): names that answer with a real model.";
    };
    dummyModelNames = mkOption {
      type = types.listOf types.str;
      default = [ "gpt-3.5-turbo" ];
      description = ''
        Names for clients that insist on one (with useDummyModels): the most recently used loaded model answers.
      '';
    };
    promptTemplate = nullOption types.str ''
      Chat template for every entry of `models` that sets none (Somner's per-model `template`).
    '';
    vision = mkOption {
      type = types.bool;
      default = false;
      description = ''
        TabbyAPI's image input. Somner serves text models (requests with images are refused); true is warned about.
      '';
    };

    # -- the engine: Somner's `engine:` section, defaults for every model ---------------------------------------------
    engine = {
      ctx = nullOption types.ints.positive ''
        Context tokens per sequence (at least 256; default: the model's, capped at 4096).
      '';
      parallel = nullOption (types.ints.between 1 256) ''
        Sequences decoded together (slots; default 4, fewer when memory is short).
      '';
      batch = nullOption types.ints.positive "Prompt tokens per scheduling step (at least 32; default 512).";
      threads = nullOption types.ints.positive "CPU threads for llama.cpp (default: the CPUs the service may use).";
      gpuLayers = nullOption types.int ''
        Layers offloaded to the GPUs (default -1: all, when llama.cpp has GPU support and there is a GPU; 0: CPU
        only).
      '';
      splitMode = nullOption (types.enum splitModes) ''
        Over several GPUs: layer (whole layers per GPU, the default), row (each layer's rows: tensor parallelism),
        none (all on mainGpu).
      '';
      mainGpu = nullOption (types.ints.between 0 63) ''
        The GPU for split mode none (and row mode's small tensors); default 0.
      '';
      tensorSplit = nullOption (types.listOf types.number) ''
        Share of each model per GPU, e.g. [ 3 1 ] (default: in proportion to each GPU's memory).
      '';
      flashAttn = nullOption (types.enum flashAttnModes) ''
        Flash attention: auto (the default: llama.cpp decides per device), on, off.
      '';
      cacheTypeK = nullOption (types.enum cacheModes) ''
        The keys' KV cache precision, for every entry of `models` that sets none.
      '';
      cacheTypeV = nullOption (types.enum cacheModes) ''
        The values' KV cache precision (quantized needs flash attention), for every entry of `models` that sets none.
      '';
    };
    gpuMemoryFraction = nullOption types.number ''
      Share of each GPU's memory that loaded models may use together (Somner's default 0.8).
    '';
    memoryBudget = nullOption types.str ''
      RAM that loaded models may use together, e.g. "24GiB" (default: 80% of the machine's).
    '';

    # -- TabbyAPI's names for the engine options -----------------------------------------------------------------------
    maxSeqLen = nullOption types.int "TabbyAPI's max_seq_len: engine.ctx (-1: the model's own, Somner's default).";
    cacheSize = nullOption types.ints.positive ''
      TabbyAPI's cache_size. llama.cpp gives each slot the whole context (its KV cache holds ctx x parallel tokens),
      so with maxSeqLen this is engine.parallel = cacheSize / maxSeqLen (the same cache), and without it engine.ctx.
      ExLlamaV3 models (backend exllamav3) that set no cacheSize take it as it is.
    '';
    maxBatchSize = nullOption (types.ints.between 1 256) "TabbyAPI's max_batch_size: engine.parallel.";
    chunkSize = nullOption types.ints.positive "TabbyAPI's chunk_size: engine.batch.";
    cacheMode = nullOption (types.enum cacheModes) ''
      KV cache precision (FP16/f16, Q8/q8_0, Q4/q4_0) for every entry of `models` that sets none.
    '';
    gpuSplit = mkOption {
      type = types.listOf types.number;
      default = [ ];
      description = ''
        TabbyAPI's gpu_split (GB per GPU): for llama.cpp, shares (engine.tensorSplit); for ExLlamaV3 models that set
        none, their gpuSplit as it is.
      '';
    };
    gpuSplitAuto = mkOption {
      type = types.bool;
      default = true;
      description = ''
        TabbyAPI's autosplit. true: llama.cpp spreads the layers over every GPU (tensor split left empty); false
        without gpuSplit: one GPU, mainGpu (engine.splitMode none).
      '';
    };
    autosplitReserve = mkOption {
      type = types.listOf types.number;
      default = [ 96 ];
      description = ''
        TabbyAPI's VRAM reserve per GPU (MB). Not used: gpuMemoryFraction sets what models may use of each GPU.
      '';
    };
    tensorParallel = mkOption {
      type = types.bool;
      default = false;
      description = ''
        TabbyAPI's tensor parallelism: for llama.cpp, engine.splitMode row (each layer's rows spread over the GPUs);
        for ExLlamaV3 models that set none, their tensorParallel.
      '';
    };

    # -- draft model (speculative decoding) and LoRAs ------------------------------------------------------------------
    draftModel = nullOption types.str "Draft model (GGUF, same vocabulary) for every entry of `models` that sets none.";
    draftModelDir = nullOption types.str ''
      TabbyAPI's draft_model_dir, for draftModelName (default: the models directory).
    '';
    draftModelName = nullOption types.str ''
      TabbyAPI's draft_model_name: the draft model `<draftModelDir>/<name>.gguf` for llama.cpp models, the folder
      `<draftModelDir>/<name>` for ExLlamaV3 ones.
    '';
    draftNumTokens = nullOption (types.ints.between 1 32) ''
      Most guesses per sequence and step (Somner's `draft_tokens`, default 4).
    '';
    draftCacheMode = nullOption (types.enum cacheModes) ''
      TabbyAPI's draft cache mode. Somner gives the draft its model's cache types; a different value is warned about.
    '';
    draftRopeScale = nullOption types.number ''
      TabbyAPI's draft RoPE scale. Not used: a draft shares its model's RoPE settings.
    '';
    draftRopeAlpha = nullOption types.number ''
      TabbyAPI's draft RoPE alpha. Not used: a draft shares its model's RoPE settings.
    '';
    draftGpuSplit = mkOption {
      type = types.listOf types.number;
      default = [ ];
      description = "TabbyAPI's draft GPU split. Not used: a draft is spread over the GPUs like its model.";
    };
    loraDir = nullOption types.str ''
      Directory of LoRA adapters (*.gguf): Somner's loras_dir (default: <dataDir>/loras).
    '';
    loras = mkOption {
      type = types.listOf loraType;
      default = [ ];
      description = "LoRA adapters for every entry of `models` that sets none.";
    };

    # -- access and logging ----------------------------------------------------------------------------------------
    auth = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Require API keys (off is accepted on a loopback host only).";
      };
      adminKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          File holding the first admin key (sk-somner-...), read at start as a systemd credential. Null: Somner
          creates one and writes it to <dataDir>/admin.key.
        '';
      };
      allowedHosts = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Host headers accepted besides localhost when listening on loopback (DNS-rebinding guard).";
      };
      corsOrigins = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Browser origins allowed to call the API.";
      };
    };

    logRequests = mkOption {
      type = types.bool;
      default = false;
      description = "Store prompt and completion text with usage records (Somner's log_requests).";
    };
    logPrompt = mkOption {
      type = types.bool;
      default = false;
      description = ''
        TabbyAPI's prompt logging: the same as logRequests (the text is kept with usage records, not printed).
      '';
    };
    logGenerationParams = mkOption {
      type = types.bool;
      default = false;
      description = "TabbyAPI's sampler-value logging. Not available: Somner's request log line has no sampler values.";
    };
    logLevel = nullOption (types.enum [ "debug" "info" "warning" "error" ]) "Log verbosity (Somner's default: info).";
    logFormat = nullOption (types.enum [ "text" "json" ]) "Log lines as text or JSON (Somner's default: text).";

    # -- the service -------------------------------------------------------------------------------------------------
    environmentFiles = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/run/secrets/somner.env" ];
      description = "systemd EnvironmentFile= entries: SOMNER_* variables, secrets such as SOMNER_DATABASE__URL.";
    };
    user = mkOption {
      type = types.str;
      default = "somner";
      description = "User the service runs as (created when left at the default).";
    };
    group = mkOption {
      type = types.str;
      default = "somner";
      description = "Group the service runs as (created when left at the default).";
    };
    dataDir = mkOption {
      type = types.str;
      default = defaultDataDir;
      description = "Somner's data directory: models, logs, the SQLite database.";
    };
    extraSettings = mkOption {
      type = format.type;
      default = { };
      example = {
        ttl = "10m";
        max_loaded = 2;
        limits.max_concurrent = 16;
      };
      description = "Any other Somner settings, merged over those generated from the options above.";
    };
  };

  config = mkIf cfg.enable {
    assertions =
      [
        {
          assertion = cfg.auth.enable || builtins.elem cfg.host [ "127.0.0.1" "::1" "localhost" ];
          message = "services.somner: auth.enable = false is accepted only with a loopback host.";
        }
      ]
      ++ map (option: {
        assertion = option.value == null || option.value == -1 || option.value >= 256;
        message = "services.somner.${option.name}: -1 (the model's own) or at least 256 tokens.";
      }) ([ { name = "maxSeqLen"; value = cfg.maxSeqLen; } ] ++ lib.mapAttrsToList (id: model: {
        name = "models.${id}.maxSeqLen";
        value = model.maxSeqLen;
      }) cfg.models)
      ++ map (pair: {
        assertion = builtins.elemAt pair 1 == null || builtins.elemAt pair 3 == null;
        message =
          "services.somner: ${builtins.elemAt pair 0} and ${builtins.elemAt pair 2} set the same Somner setting; "
          + "keep one.";
      }) twoNames
      ++ map (lora: {
        assertion = (lora.path == null) != (lora.name == null);
        message = "services.somner: each LoRA needs exactly one of `path` and `name`.";
      }) (cfg.loras ++ lib.concatMap (model: if model.loras == null then [ ] else model.loras) modelList);

    warnings =
      map (entry: "services.somner.${builtins.elemAt entry 1}") (lib.filter (entry: builtins.elemAt entry 0) noEffect)
      ++ optional (perModelGlobals != [ ] && cfg.models == { } && !startModelIsId) (
        "services.somner: ${lib.concatStringsSep ", " perModelGlobals}: Somner keeps these per model; they apply to "
        + "the entries of `models`, and to `model` when it names a model by id. With neither, they have no effect."
      );

    users.users = mkIf (cfg.user == "somner") {
      somner = {
        isSystemUser = true;
        inherit (cfg) group;
        home = cfg.dataDir;
      };
    };
    users.groups = mkIf (cfg.group == "somner") { somner = { }; };

    systemd.tmpfiles.rules = mkIf (cfg.dataDir != defaultDataDir) [
      "d ${cfg.dataDir} 0750 ${cfg.user} ${cfg.group} - -"
    ];

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall (
      [ cfg.port ] ++ optional (cfg.healthPort != null) cfg.healthPort
    );

    systemd.services.somner = {
      description = "Somner LLM server and gateway";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      environment = {
        SOMNER_DATA_DIR = cfg.dataDir;
        PYTHONUNBUFFERED = "1";
        # CUDA's cache of kernels compiled for this GPU, kept where the service may write.
        CUDA_CACHE_PATH = "${cfg.dataDir}/.nv/ComputeCache";
      };
      # The admin key goes from the credential to the environment here, so it is never in the store or argv.
      script = ''
        ${optionalString (cfg.auth.adminKeyFile != null) ''
          SOMNER_ADMIN_KEY="$(< "$CREDENTIALS_DIRECTORY/admin-key")"
          export SOMNER_ADMIN_KEY
        ''}
        exec ${cfg.package}/bin/somner serve --config ${configFile} ${escapeShellArgs cfg.extraArgs}
      '';
      serviceConfig = {
        Type = "exec";
        User = cfg.user;
        Group = cfg.group;
        StateDirectory = mkIf (cfg.dataDir == defaultDataDir) "somner";
        StateDirectoryMode = "0750";
        WorkingDirectory = cfg.dataDir;
        ReadWritePaths = [ cfg.dataDir ];
        EnvironmentFile = cfg.environmentFiles;
        LoadCredential = optional (cfg.auth.adminKeyFile != null) "admin-key:${cfg.auth.adminKeyFile}";
        UMask = "0027";
        # SIGTERM drains requests in flight (drain_timeout, 30 s) and stops engines (10 s) before systemd kills.
        KillSignal = "SIGTERM";
        KillMode = "mixed";
        TimeoutStopSec = 60;
        TimeoutStartSec = 300;
        Restart = "on-failure";
        RestartSec = 5;
        # The same hardening as deploy/somner.service.
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = false; # GPUs are devices (/dev/nvidia*, /dev/dri)
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RemoveIPC = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged @mount @debug @cpu-emulation @obsolete" ];
        LimitNOFILE = 65536;
      };
    };
  };
}
