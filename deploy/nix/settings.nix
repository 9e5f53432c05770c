# The module's options mapped onto Somner's YAML configuration (the keys of `somner config example`).
# Pure and built-ins only, so it can be evaluated and checked against Somner's settings model without nixpkgs
# (tests/deploy/test_artifacts.py does). `cfg` is `config.services.somner`; the result is what the module
# writes to the config file. Options left null are left out, so Somner's own defaults apply.
#
# Two vocabularies reach the same keys: Somner's own (`engine.*`, each model's `ctx`, `tensorSplit`, ...) and
# TabbyAPI's (`maxSeqLen`, `cacheSize`, `maxBatchSize`, `chunkSize`, `gpuSplit`, `tensorParallel`, ...). Where both
# are set, Somner's wins (the module refuses such a configuration anyway, naming both).
{ cfg }:
let
  withoutNulls = attrs: removeAttrs attrs (builtins.filter (name: attrs.${name} == null) (builtins.attrNames attrs));
  nonEmpty = list: if list == [ ] then null else list;
  # The first value that is not null (null when all are).
  first = builtins.foldl' (found: value: if found != null then found else value) null;
  hasSuffix =
    suffix: text:
    let
      n = builtins.stringLength text;
      k = builtins.stringLength suffix;
    in
    n >= k && builtins.substring (n - k) k text == suffix;
  # TabbyAPI names a model by its folder; Somner serves GGUF files.
  gguf = dir: name: if hasSuffix ".gguf" name then "${dir}/${name}" else "${dir}/${name}.gguf";

  # Right wins; nested attribute sets are merged (extraSettings over the generated settings).
  merge =
    left: right:
    left
    // builtins.mapAttrs (
      name: value:
      if builtins.isAttrs value && builtins.isAttrs (left.${name} or null) then merge left.${name} value else value
    ) right;

  modelsDir = if cfg.modelsDir != null then cfg.modelsDir else "${cfg.dataDir}/models";
  lorasDir = if cfg.loraDir != null then cfg.loraDir else "${cfg.dataDir}/loras";

  # TabbyAPI's max_seq_len: -1 means the model's own length, which is Somner's default (capped at 4096).
  seqLen = value: if value == null || value < 0 then null else value;

  # -- engine: defaults for every model ----------------------------------------------------------------------------
  maxSeqLen = seqLen cfg.maxSeqLen;
  ctx = first [
    cfg.engine.ctx
    maxSeqLen
    # TabbyAPI's cache_size without a max_seq_len (or with -1): one sequence may use the whole cache.
    (if maxSeqLen == null && cfg.cacheSize != null && cfg.cacheSize >= 256 then cfg.cacheSize else null)
  ];
  # TabbyAPI's jobs share one cache of cache_size tokens; Somner gives each of `parallel` slots the whole ctx (the
  # KV cache holds ctx x parallel tokens), so the same cache is cache_size / max_seq_len slots.
  slotsInCache =
    if cfg.cacheSize != null && maxSeqLen != null then
      let
        slots = cfg.cacheSize / maxSeqLen;
      in
      if slots < 1 then 1 else if slots > 256 then 256 else slots
    else
      null;
  tensorSplit = first [
    cfg.engine.tensorSplit
    (nonEmpty cfg.gpuSplit)
  ];
  splitMode = first [
    cfg.engine.splitMode
    # TabbyAPI's tensor parallelism is llama.cpp's row split: each layer's rows spread over the GPUs.
    (if cfg.tensorParallel then "row" else null)
    # TabbyAPI without autosplit and without a split puts the model on one GPU: llama.cpp's split mode none.
    (if !cfg.gpuSplitAuto && tensorSplit == null then "none" else null)
  ];
  engine = withoutNulls {
    inherit ctx;
    parallel = first [
      cfg.engine.parallel
      cfg.maxBatchSize
      slotsInCache
    ];
    batch = first [
      cfg.engine.batch
      cfg.chunkSize
    ];
    threads = cfg.engine.threads;
    gpu_layers = cfg.engine.gpuLayers;
    split_mode = splitMode;
    main_gpu = cfg.engine.mainGpu;
    tensor_split = tensorSplit;
    flash_attn = cfg.engine.flashAttn;
  };

  # -- models: per-model keys, with the global ones for every entry that sets none ---------------------------------
  # Somner keeps the cache precision, the draft model, LoRAs and the template per model, so TabbyAPI's global
  # options (and engine.cacheTypeK/V) become each entry's own keys.
  # TabbyAPI names draft models and adapters by folder: a GGUF file `<dir>/<name>.gguf` for llama.cpp, the folder
  # itself for ExLlamaV3 (`exllama`: whether the entry is an exllamav3 one).
  named = exllama: dir: name: if exllama then "${dir}/${name}" else gguf dir name;
  draftModel =
    exllama:
    first [
      cfg.draftModel
      (if cfg.draftModelName != null then
        named exllama (if cfg.draftModelDir != null then cfg.draftModelDir else modelsDir) cfg.draftModelName
      else
        null)
    ];
  loraEntry =
    exllama: lora:
    withoutNulls {
      # Neither: the module's assertion says so; nothing to resolve here.
      path =
        if lora.path != null then
          lora.path
        else if lora.name != null then
          named exllama lorasDir lora.name
        else
          null;
      scale = if lora.scaling != null then lora.scaling else lora.scale;
    };
  perModelDefaults =
    exllama:
    withoutNulls {
      cache_type = cfg.cacheMode;
      cache_type_k = cfg.engine.cacheTypeK;
      cache_type_v = cfg.engine.cacheTypeV;
      draft_model = draftModel exllama;
      draft_tokens = cfg.draftNumTokens;
      template = cfg.promptTemplate;
      loras = nonEmpty (map (loraEntry exllama) cfg.loras);
    }
    // (if exllama then exllamaDefaults else { });

  # TabbyAPI's split and cache options as ExLlamaV3 has them, for its models (llama.cpp's come from `engine`).
  exllamaDefaults = withoutNulls {
    cache_size = cfg.cacheSize;
    gpu_split = nonEmpty cfg.gpuSplit;
    tensor_parallel = if cfg.tensorParallel then true else null;
  };

  modelEntry =
    id: model:
    let
      exllama = model.backend == "exllamav3";
    in
    merge (
      perModelDefaults exllama
      // withoutNulls {
        inherit id;
        inherit (model) path backend threads batch template ttl group;
        ctx = first [
          model.ctx
          (seqLen model.maxSeqLen)
        ];
        inherit (model) parallel;
        gpu_layers = model.gpuLayers;
        split_mode = model.splitMode;
        main_gpu = model.mainGpu;
        tensor_split = model.tensorSplit;
        flash_attn = model.flashAttn;
        cache_type = model.cacheMode;
        cache_type_k = model.cacheTypeK;
        cache_type_v = model.cacheTypeV;
        draft_model = model.draftModel;
        draft_tokens = model.draftTokens;
        cache_size = model.cacheSize;
        gpu_split = model.gpuSplit;
        tensor_parallel = model.tensorParallel;
        rope_scale = model.ropeScale;
        rope_base = model.ropeBase;
        aliases = nonEmpty model.aliases;
        pinned = if model.pinned then true else null;
        # [ ]: no adapters for this model, whatever the global `loras` say.
        loras = if model.loras == null then null else map (loraEntry exllama) model.loras;
        defaults = if model.defaults == { } then null else model.defaults;
      }
    ) model.extraSettings;

  # The model loaded at start, named by id (TabbyAPI's model_name), gets an entry of its own for the global per-model
  # options when `models` has none for it, as TabbyAPI applies them to that model. (A path cannot be an id.)
  startModelIsId =
    cfg.model != null && builtins.match ".*/.*" cfg.model == null && !(hasSuffix ".gguf" cfg.model);
  emptyModel = {
    path = null;
    backend = null;
    cacheSize = null;
    gpuSplit = null;
    tensorParallel = null;
    threads = null;
    batch = null;
    template = null;
    ttl = null;
    group = null;
    ctx = null;
    maxSeqLen = null;
    parallel = null;
    gpuLayers = null;
    splitMode = null;
    mainGpu = null;
    tensorSplit = null;
    flashAttn = null;
    cacheMode = null;
    cacheTypeK = null;
    cacheTypeV = null;
    draftModel = null;
    draftTokens = null;
    ropeScale = null;
    ropeBase = null;
    aliases = [ ];
    pinned = false;
    loras = null;
    defaults = { };
    extraSettings = { };
  };
  startModelHasEntry =
    cfg.models ? ${cfg.model}
    || builtins.any (model: builtins.elem cfg.model model.aliases) (builtins.attrValues cfg.models);
  models =
    cfg.models
    // (
      if startModelIsId && perModelDefaults false != { } && !startModelHasEntry then
        { ${cfg.model} = emptyModel; }
      else
        { }
    );

  # -- the rest ----------------------------------------------------------------------------------------------------
  # TabbyAPI's names for its API servers mean Somner's openai and kobold; each dialect is listed once.
  tabbyNames = {
    OAI = "openai";
    oai = "openai";
    Kobold = "kobold";
  };
  apiServers = builtins.foldl' (
    servers: name:
    let
      server = tabbyNames.${name} or name;
    in
    if builtins.elem server servers then servers else servers ++ [ server ]
  ) [ ] cfg.apiServers;

  generated = withoutNulls {
    inherit (cfg) host port model;
    api_servers = apiServers;
    models_dir = cfg.modelsDir;
    loras_dir = cfg.loraDir;
    health_port = cfg.healthPort;
    log_level = cfg.logLevel;
    log_format = cfg.logFormat;
    # TabbyAPI's prompt and request logging both mean keeping the text: Somner stores each request's prompt and
    # completion with its usage record (TabbyAPI prints them to the console).
    log_requests = cfg.logRequests || cfg.logPrompt;
    dummy_models = if cfg.useDummyModels then nonEmpty cfg.dummyModelNames else null;
    memory_budget = cfg.memoryBudget;
    gpu_memory_fraction = cfg.gpuMemoryFraction;
    engine = if engine == { } then null else engine;
    auth = withoutNulls {
      enabled = cfg.auth.enable;
      allowed_hosts = nonEmpty cfg.auth.allowedHosts;
      cors_origins = nonEmpty cfg.auth.corsOrigins;
    };
    models = if models == { } then null else builtins.attrValues (builtins.mapAttrs modelEntry models);
  };
in
merge generated cfg.extraSettings
