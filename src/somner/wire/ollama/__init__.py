"""The Ollama dialect: request schemas (`schemas`), wire → core (`decode`), core → wire (`encode`)."""
