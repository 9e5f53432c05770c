"""Somner: a self-hosted LLM server and gateway."""

__version__ = "0.1.0"
