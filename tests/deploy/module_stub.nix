# deploy/nix/module.nix evaluated without nixpkgs (Debian's nix-bin has none): a stand-in for the parts of `lib`
# the module uses, built on builtins. Options are read as declared (mkOption returns its declaration); the
# `overrides` are checked against them as NixOS would (unknown options, types, enums, ranges) and completed with the
# declared defaults, which gives `cfg`; the module's `config` is then evaluated with it.
# Used by tests/deploy/test_nix_module.py; module_eval.nix does the same with nixpkgs' own lib, where there is one.
{ moduleDir, overrides }:
let
  declared = name: extra: { _type = name; } // extra;
  types = {
    str = declared "str" { };
    int = declared "int" { };
    bool = declared "bool" { };
    port = declared "between" {
      lo = 0;
      hi = 65535;
    };
    package = declared "package" { };
    number = declared "number" { };
    ints = {
      positive = declared "positive" { };
      between = lo: hi: declared "between" { inherit lo hi; };
    };
    nullOr = type: type // { nullable = true; };
    listOf = elem: declared "listOf" { inherit elem; };
    attrsOf = elem: declared "attrsOf" { inherit elem; };
    enum = values: declared "enum" { inherit values; };
    submodule = module: declared "submodule" { inherit (module) options; };
  };

  concatMap = f: list: builtins.concatLists (map f list);
  lib = {
    inherit types concatMap;
    inherit (builtins) attrValues concatLists concatStringsSep filter;
    mkOption = declaration: declaration // { _option = true; };
    mkEnableOption = what: {
      _option = true;
      type = types.bool;
      default = false;
      description = what;
    };
    mkIf = condition: value: value;
    optional = condition: value: if condition then [ value ] else [ ];
    optionalString = condition: text: if condition then text else "";
    mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
    escapeShellArgs = args: builtins.concatStringsSep " " (
      map (arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] arg}'") args
    );
  };
  pkgs.formats.yaml = _: {
    type = declared "yaml" { };
    generate = name: value: "/nix/store/00000000000000000000000000000000-${name}";
  };

  fail = path: message: throw "services.somner.${path}: ${message}";
  isNumber = value: builtins.isInt value || builtins.isFloat value;
  # A value checked against its declared type (NixOS' type checks, reduced to what the module declares).
  check =
    path: type: value:
    if value == null then
      (if type.nullable or false then null else fail path "null is not allowed")
    else if type._type == "str" then
      (if builtins.isString value then value else fail path "not a string")
    else if type._type == "int" then
      (if builtins.isInt value then value else fail path "not an integer")
    else if type._type == "bool" then
      (if builtins.isBool value then value else fail path "not a boolean")
    else if type._type == "number" then
      (if isNumber value then value else fail path "not a number")
    else if type._type == "positive" then
      (if builtins.isInt value && value > 0 then value else fail path "not a positive integer")
    else if type._type == "between" then
      (
        if builtins.isInt value && value >= type.lo && value <= type.hi then
          value
        else
          fail path "not an integer from ${toString type.lo} to ${toString type.hi}"
      )
    else if type._type == "enum" then
      (
        if builtins.elem value type.values then
          value
        else
          fail path "${builtins.toJSON value} is not one of the enum's values"
      )
    else if type._type == "listOf" then
      (if builtins.isList value then map (check "${path}.*" type.elem) value else fail path "not a list")
    else if type._type == "attrsOf" then
      (
        if builtins.isAttrs value then
          builtins.mapAttrs (name: check "${path}.${name}" type.elem) value
        else
          fail path "not an attribute set"
      )
    else if type._type == "submodule" then
      (if builtins.isAttrs value then complete path type.options value else fail path "not an attribute set")
    else
      value; # yaml, package: anything
  # Every declared option of `options`, from `value` or its default; a name that is no option is an error.
  complete =
    path: options: value:
    let
      unknown = builtins.filter (name: !(options ? ${name})) (builtins.attrNames value);
    in
    if unknown != [ ] then
      fail path "no such option: ${builtins.concatStringsSep ", " unknown}"
    else
      builtins.mapAttrs (
        name: option:
        let
          where = if path == "" then name else "${path}.${name}";
        in
        if option ? _option then
          (
            if value ? ${name} then
              check where option.type value.${name}
            else if option ? default then
              option.default
            else
              null
          )
        else
          complete where option (value.${name} or { })
      ) options;

  # The declared options as dotted paths; `*` stands for any model id or list element.
  leaves =
    prefix: options:
    concatMap (
      name:
      let
        option = options.${name};
        path = "${prefix}${name}";
        elem = option.type.elem or null;
      in
      if !(option ? _option) then
        leaves "${path}." option
      else if option.type._type == "submodule" then
        leaves "${path}." option.type.options
      else if elem != null && elem._type == "submodule" then
        leaves "${path}.*." elem.options
      else
        [ path ]
    ) (builtins.attrNames options);
  # The same, for the options a value sets.
  setLeaves =
    prefix: options: value:
    concatMap (
      name:
      let
        option = options.${name};
        path = "${prefix}${name}";
        elem = option.type.elem or null;
      in
      if !(option ? _option) then
        setLeaves "${path}." option value.${name}
      else if elem != null && elem._type == "submodule" then
        let
          items = value.${name};
        in
        concatMap (item: setLeaves "${path}.*." elem.options item) (
          if items == null then [ ] else if builtins.isList items then items else builtins.attrValues items
        )
      else
        [ path ]
    ) (builtins.filter (name: options ? ${name}) (builtins.attrNames value));

  declaration = import "${moduleDir}/module.nix" {
    inherit lib pkgs;
    config = throw "config is not read for options";
  };
  options = declaration.options.services.somner;
  package = "/nix/store/00000000000000000000000000000000-somner";
  cfg = complete "" options ({ inherit package; } // overrides);
  module = import "${moduleDir}/module.nix" {
    inherit lib pkgs;
    config.services.somner = cfg;
  };
  service = module.config.systemd.services.somner;
in
{
  settings = import "${moduleDir}/settings.nix" { inherit cfg; };
  failed = map (assertion: assertion.message) (
    builtins.filter (assertion: !assertion.assertion) module.config.assertions
  );
  inherit (module.config) warnings;
  inherit (service) script environment serviceConfig;
  options = leaves "" options;
  set = setLeaves "" options overrides;
  apiServerNames = options.apiServers.type.elem.values;
}
