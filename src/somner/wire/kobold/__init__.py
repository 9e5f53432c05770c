"""The KoboldAI wire (KoboldCpp's flavour of it): request bodies, and codecs to and from the core types."""
