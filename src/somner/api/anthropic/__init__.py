"""The Anthropic-compatible API (`/v1/messages`)."""
