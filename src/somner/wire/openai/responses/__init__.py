"""OpenAI's Responses API (`POST /v1/responses`): request schemas (`schemas`), wire → core (`decode`), core →
wire (`encode`: the response object and its streamed events)."""
