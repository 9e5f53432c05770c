# deploy/nix/module.nix evaluated by nixpkgs' own module system (`lib.evalModules`, the real option types), for
# the tests where a nixpkgs is at hand (NIXPKGS_LIB, or <nixpkgs> on NIX_PATH): the same answers as module_stub.nix.
# The NixOS options the module sets (assertions, warnings, users, networking, systemd) are declared here loosely;
# `pkgs.formats.yaml` is a stand-in with the real value type.
{
  nixpkgsLib,
  moduleDir,
  overrides,
}:
let
  lib = import nixpkgsLib;
  yamlValue =
    with lib.types;
    nullOr (oneOf [
      bool
      int
      float
      str
      path
      (attrsOf yamlValue)
      (listOf yamlValue)
    ]);
  pkgs.formats.yaml = _: {
    type = yamlValue;
    generate = name: value: "/nix/store/00000000000000000000000000000000-${name}";
  };
  loose = lib.mkOption {
    type = lib.types.anything;
    default = { };
  };
  nixos.options = {
    assertions = lib.mkOption {
      type = lib.types.listOf lib.types.anything;
      default = [ ];
    };
    warnings = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
    };
    users = loose;
    networking = loose;
    systemd = loose;
  };
  package = {
    type = "derivation";
    name = "somner";
    outPath = "/nix/store/00000000000000000000000000000000-somner";
  };
  evaluated = lib.evalModules {
    modules = [
      nixos
      (import "${moduleDir}/module.nix")
      { services.somner = { inherit package; } // overrides; }
    ];
    specialArgs = { inherit pkgs; };
  };
  inherit (evaluated) config;
  service = config.systemd.services.somner;
in
{
  settings = import "${moduleDir}/settings.nix" { cfg = config.services.somner; };
  failed = map (assertion: assertion.message) (builtins.filter (assertion: !assertion.assertion) config.assertions);
  inherit (config) warnings;
  inherit (service) script environment serviceConfig;
}
