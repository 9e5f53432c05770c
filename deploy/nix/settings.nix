# The module's options mapped onto Somner's YAML configuration (the keys of `somner config example`).
# Pure and built-ins only, so it can be evaluated and checked against Somner's settings model without nixpkgs
# (tests/deploy/test_artifacts.py does). `cfg` is `config.services.somner`; the result is what the module
# writes to the config file. Options left null are left out, so Somner's own defaults apply.
{ cfg }:
let
  withoutNulls = attrs: removeAttrs attrs (builtins.filter (name: attrs.${name} == null) (builtins.attrNames attrs));

  # Right wins; nested attribute sets are merged (extraSettings over the generated settings).
  merge =
    left: right:
    left
    // builtins.mapAttrs (
      name: value:
      if builtins.isAttrs value && builtins.isAttrs (left.${name} or null) then merge left.${name} value else value
    ) right;

  # TabbyAPI-style global cacheMode, draftModel and loras apply to every model entry that does not set its own:
  # Somner keeps them per model (cache_type, draft_model, loras).
  modelEntry =
    id: model:
    merge (withoutNulls {
      inherit id;
      inherit (model) path ctx parallel threads batch template ttl group;
      gpu_layers = model.gpuLayers;
      cache_type = if model.cacheMode != null then model.cacheMode else cfg.cacheMode;
      draft_model = if model.draftModel != null then model.draftModel else cfg.draftModel;
      rope_scale = model.ropeScale;
      rope_base = model.ropeBase;
      tensor_split = model.tensorSplit;
      aliases = if model.aliases == [ ] then null else model.aliases;
      pinned = if model.pinned then true else null;
      loras =
        let
          loras = if model.loras != null then model.loras else cfg.loras;
        in
        if loras == [ ] then null else map (lora: { inherit (lora) path scale; }) loras;
      defaults = if model.defaults == { } then null else model.defaults;
    }) model.extraSettings;

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
    health_port = cfg.healthPort;
    log_level = cfg.logLevel;
    log_format = cfg.logFormat;
    log_requests = cfg.logRequests;
    auth = withoutNulls {
      enabled = cfg.auth.enable;
      allowed_hosts = if cfg.auth.allowedHosts == [ ] then null else cfg.auth.allowedHosts;
      cors_origins = if cfg.auth.corsOrigins == [ ] then null else cfg.auth.corsOrigins;
    };
    models =
      if cfg.models == { } then null else builtins.attrValues (builtins.mapAttrs modelEntry cfg.models);
  };
in
merge generated cfg.extraSettings
