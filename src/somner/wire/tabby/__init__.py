"""TabbyAPI's own API (model, LoRA, template, sampler-override and token calls): request schemas and response
shapes. Its completions go through the OpenAI dialect, as in TabbyAPI."""
