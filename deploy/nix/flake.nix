# A flake exposing Somner's NixOS module. In a system flake:
#   inputs.somner.url = "github:OWNER/somner?dir=deploy/nix";
#   nixosConfigurations.box = nixpkgs.lib.nixosSystem {
#     modules = [ inputs.somner.nixosModules.somner { services.somner = { enable = true; package = ...; }; } ];
#   };
# The module brings no nixpkgs of its own: it uses the system's `pkgs` and `lib`.
{
  description = "Somner, a self-hosted LLM server and gateway: NixOS module";

  outputs =
    { self }:
    {
      nixosModules.somner = import ./module.nix;
      nixosModules.default = self.nixosModules.somner;
    };
}
