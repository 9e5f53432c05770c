"""The Ollama-compatible API (`/api/...`, NDJSON streaming)."""
