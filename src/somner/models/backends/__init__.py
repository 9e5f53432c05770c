"""Backends: what actually generates for a model (an engine worker process, and later other engines)."""
