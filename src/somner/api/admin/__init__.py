"""Admin API: model lifecycle (load, unload, status) and, later, keys and usage."""
