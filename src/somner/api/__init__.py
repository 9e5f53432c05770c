"""HTTP APIs: one package per dialect, plus what they share (errors, request ids, bodies, streaming)."""
