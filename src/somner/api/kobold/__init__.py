"""The KoboldAI-compatible API (`/api/v1/...`, `/api/extra/...`)."""
