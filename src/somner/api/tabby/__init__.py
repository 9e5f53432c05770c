"""TabbyAPI's own API (`/v1/model...`, `/v1/lora...`, `/v1/template...`, `/v1/sampling/override...`,
`/v1/token/...`, `/v1/auth/permission`, `/v1/health`), so TabbyAPI's clients and admin tools work unchanged.
Its completions are the OpenAI routes; its samplers are fields of those requests."""
