"""The Anthropic Messages dialect: request schemas (`schemas`), wire → core (`decode`), core → wire (`encode`)."""
