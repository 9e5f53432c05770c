"""Which engine serves a model name: the registry, the lifecycle owner (manager) and the backends."""
