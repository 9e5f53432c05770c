# NixOS module for Somner: `services.somner`. The options follow the TabbyAPI module (host, port, API servers,
# models dir, per-model settings, cache mode, draft model, LoRAs, auth, logging toggles, environment files, user
# and group) and are mapped onto Somner's YAML configuration by ./settings.nix; `extraSettings` passes any other
# Somner key through unchanged (see `somner config example`). Somner rejects unknown keys, so nothing here
# invents one: TabbyAPI's global cache mode, draft model and LoRAs become each model's `cache_type`, `draft_model`
# (speculative decoding) and `loras`.
# Secrets never enter the Nix store: the admin key is read from `auth.adminKeyFile` at start (systemd
# credential), a PostgreSQL URL belongs in one of `environmentFiles` as SOMNER_DATABASE__URL=...
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkOption optional optionalString types;

  cfg = config.services.somner;
  format = pkgs.formats.yaml { };
  configFile = format.generate "somner.yaml" (import ./settings.nix { inherit cfg; });
  defaultDataDir = "/var/lib/somner";

  cacheModes = [ "FP16" "Q8" "Q4" "f16" "q8_0" "q4_0" ];

  loraType = types.submodule {
    options = {
      path = mkOption {
        type = types.str;
        description = "LoRA adapter (GGUF).";
      };
      scale = mkOption {
        type = types.number;
        default = 1.0;
        description = "Strength of the adapter.";
      };
    };
  };

  modelType = types.submodule {
    options = {
      path = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "GGUF file. Null: a `<id>.gguf` of the models directory, tuned by this entry.";
      };
      aliases = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "More names that reach this model.";
      };
      ctx = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Context tokens per sequence (Somner's `ctx`; at least 256).";
      };
      parallel = mkOption {
        type = types.nullOr (types.ints.between 1 256);
        default = null;
        description = "Sequences decoded together (slots); the KV cache holds ctx x parallel tokens.";
      };
      threads = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "CPU threads for llama.cpp.";
      };
      batch = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Prompt tokens per scheduling step (at least 32).";
      };
      gpuLayers = mkOption {
        type = types.nullOr types.int;
        default = null;
        description = "Layers offloaded to the GPU; -1 means all.";
      };
      cacheMode = mkOption {
        type = types.nullOr (types.enum cacheModes);
        default = null;
        description = "KV cache precision for this model (Somner's `cache_type`); default: the global cacheMode.";
      };
      draftModel = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Draft model (GGUF, same vocabulary) for speculative decoding; default: the global draftModel.";
      };
      ropeScale = mkOption {
        type = types.nullOr types.number;
        default = null;
        description = "RoPE frequency scale.";
      };
      ropeBase = mkOption {
        type = types.nullOr types.number;
        default = null;
        description = "RoPE frequency base.";
      };
      tensorSplit = mkOption {
        type = types.nullOr (types.listOf types.number);
        default = null;
        description = "Share of the model per GPU.";
      };
      loras = mkOption {
        type = types.nullOr (types.listOf loraType);
        default = null;
        description = "LoRA adapters for this model; default: the global loras.";
      };
      template = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Chat template: gemma, llama3, chatml, mistral, phi3, or a Jinja file's path.";
      };
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
      group = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Swap group (define it with extraSettings.groups).";
      };
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
in
{
  options.services.somner = {
    enable = mkEnableOption "Somner, a self-hosted LLM server and gateway";

    package = mkOption {
      type = types.package;
      description = ''
        A package providing bin/somner, e.g. a Python environment installed from Somner's wheelhouse
        (`make wheelhouse`). Somner is not in nixpkgs.
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
      description = "TCP port of the API.";
    };
    healthPort = mkOption {
      type = types.nullOr types.port;
      default = null;
      description = "A second port serving only /ping, /health and /ready.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the API port (and the health port) in the firewall.";
    };
    apiServers = mkOption {
      # TabbyAPI's names for its servers (OAI, Kobold; any letter case there) are accepted too.
      type = types.listOf (types.enum [ "openai" "ollama" "kobold" "anthropic" "tabby" "OAI" "oai" "Kobold" ]);
      default = [ "openai" "ollama" "kobold" "anthropic" "tabby" ];
      description = "API dialects served: openai, ollama, kobold, anthropic, tabby (TabbyAPI's own names OAI and Kobold mean openai and kobold).";
    };

    modelsDir = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Directory scanned for *.gguf files (default: <dataDir>/models). Read-only to the service.";
    };
    model = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "A model id or GGUF path loaded at start.";
    };
    models = mkOption {
      type = types.attrsOf modelType;
      default = { };
      description = "Per-model settings, by model id (Somner's `models:` entries).";
    };
    cacheMode = mkOption {
      type = types.nullOr (types.enum cacheModes);
      default = null;
      description = "KV cache precision for every entry of `models` that sets none (Somner has no global one).";
    };
    draftModel = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Draft model (GGUF) for speculative decoding, for every entry of `models` that sets none.";
    };
    loras = mkOption {
      type = types.listOf loraType;
      default = [ ];
      description = "LoRA adapters for every entry of `models` that sets none.";
    };

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
      description = "Store prompt and completion text with usage records.";
    };
    logLevel = mkOption {
      type = types.nullOr (types.enum [ "debug" "info" "warning" "error" ]);
      default = null;
      description = "Log verbosity (Somner's default: info).";
    };
    logFormat = mkOption {
      type = types.nullOr (types.enum [ "text" "json" ]);
      default = null;
      description = "Log lines as text or JSON (Somner's default: text).";
    };

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
    assertions = [
      {
        assertion = cfg.auth.enable || builtins.elem cfg.host [ "127.0.0.1" "::1" "localhost" ];
        message = "services.somner: auth.enable = false is accepted only with a loopback host.";
      }
    ];

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
      };
      # The admin key goes from the credential to the environment here, so it is never in the store or argv.
      script = ''
        ${optionalString (cfg.auth.adminKeyFile != null) ''
          SOMNER_ADMIN_KEY="$(< "$CREDENTIALS_DIRECTORY/admin-key")"
          export SOMNER_ADMIN_KEY
        ''}
        exec ${cfg.package}/bin/somner serve --config ${configFile}
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
        PrivateDevices = false; # GPUs are devices
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
