"""OpenAI's legacy function calling through a real worker: the worker speaks OpenAI, so its streams are usually
relayed as they are; a legacy request must not be (its answer has `function_call`, not `tool_calls`)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.inprocess import ThreadedGateway
from tests.integration.test_keep_alive_unload import settings_for

pytestmark = pytest.mark.integration


def test_legacy_function_call_through_a_real_worker_keeps_the_legacy_shape(tmp_path: Path, model_path: Path) -> None:
    weather = {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "functions": [weather],
        "function_call": {"name": "get_weather"},
        "max_tokens": 40,
    }
    with (
        ThreadedGateway(settings_for(tmp_path, model_path)) as gateway,
        httpx.Client(base_url=gateway.url, timeout=120) as client,
    ):
        whole = client.post("/v1/chat/completions", json=body)
        assert whole.status_code == 200, whole.text
        choice = whole.json()["choices"][0]
        assert choice["finish_reason"] == "function_call" and "tool_calls" not in choice["message"]
        assert choice["message"]["function_call"]["name"] == "get_weather"
        assert "city" in choice["message"]["function_call"]["arguments"]
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 200
        text = streamed.text
        assert '"function_call"' in text and '"tool_calls"' not in text
        assert '"finish_reason":"function_call"' in text
