"""The names of the chat templates that ship with Somner, and their aliases: read by the settings (a model's
`template` may name one) and by the engine (which renders them), kept apart so that an engine starts without
importing the settings' models."""

from __future__ import annotations

BUILTIN_TEMPLATES = ("gemma", "llama3", "chatml", "mistral", "phi3")
"""Chat templates that ship with Somner (a model's `template` may name one)."""
TEMPLATE_ALIASES = {"qwen": "chatml", "phi": "phi3", "llama-3": "llama3"}
