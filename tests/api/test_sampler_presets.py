"""Sampler override presets (TabbyAPI's): switched through TabbyAPI's calls, applied to every dialect's requests
(defaults, forced values, additive lists), and refused with a 400 when a preset or a value is bad."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from somner.core import SamplingParams
from somner.errors import BadRequest, SomnerError
from somner.models.presets import SamplerPresets, apply_overrides, parse_overrides
from somner.services import Services
from somner.wire.openai.decode import sampler_fields
from tests.api.conftest import running
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

CREATIVE = """
temperature: {override: 1.3, force: false}
min_p: {override: 0.1, force: true}
rep_pen: {override: 1.15}
stop: {override: ["THE END"], additive: true}
dry_sequence_breakers: {override: ["\\n"], force: true}
smoothing_factor: {override: 0.3}
"""


@pytest.fixture
async def app(tmp_path: Path, farm: FakeFarm) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    folder = tmp_path / "data" / "sampler_overrides"
    folder.mkdir(parents=True)
    (folder / "creative.yml").write_text(CREATIVE)
    (folder / "broken.yml").write_text("top_p: {override: 7}\n")
    async with running(tmp_path, farm) as pair:
        yield pair


def last_sampling(farm: FakeFarm) -> SamplingParams:
    return farm.backends[-1].requests[-1].sampling


def test_defaults_forced_values_and_additive_lists() -> None:
    overrides = parse_overrides(
        {
            "temperature": {"override": 1.3},
            "min_p": {"override": 0.1, "force": True},
            "stop": {"override": ["END"], "additive": True},
            "top_k": {"override": 0, "force": True},
        },
        sampler_fields,
    )
    request = SamplingParams(temperature=0.2, min_p=0.5, top_k=40, stop=["\n"])
    apply_overrides(request, overrides)
    assert (request.temperature, request.min_p, request.top_k, request.stop) == (0.2, 0.1, 0, ["END", "\n"])
    empty = SamplingParams()
    apply_overrides(empty, overrides)
    assert (empty.temperature, empty.min_p, empty.top_k, empty.stop) == (1.3, 0.1, 0, ["END"])


@pytest.mark.parametrize(
    "data",
    [
        [1, 2],
        {"top_p": 0.5},
        {"top_p": {"override": 5}},
        {"top_p": {"override": "high"}},
        {"top_p": {"override": 0.5, "force": "yes"}},
        {"top_p": {"override": 0.5, "sometimes": True}},
        {"banned_tokens": {"override": "1, x"}},
        {"mirostat_mode": {"override": 3}},
    ],
)
def test_bad_presets_are_refused_naming_the_problem(data: object) -> None:
    with pytest.raises(BadRequest):
        parse_overrides(data, sampler_fields)


async def test_switch_list_and_unload(app: tuple[Services, httpx.AsyncClient], farm: FakeFarm) -> None:
    services, client = app
    listed = (await client.get("/v1/sampling/override/list")).json()
    assert listed == {"selected_preset": None, "overrides": {}, "presets": ["broken", "creative"]}
    assert (await client.post("/v1/sampling/override/switch", json={"preset": "creative"})).json() is None
    listed = (await client.get("/v1/sampling/overrides")).json()
    assert listed["selected_preset"] == "creative"
    assert listed["overrides"]["min_p"] == {"override": 0.1, "force": True, "additive": False}
    hi = [{"role": "user", "content": "hi there"}]
    await client.post("/v1/chat/completions", json={"model": "alpha", "messages": hi, "min_p": 0.9, "stop": ["x"]})
    sampling = last_sampling(farm)
    assert (sampling.temperature, sampling.min_p, sampling.repeat_penalty) == (1.3, 0.1, 1.15)
    assert sampling.stop == ["THE END", "x"] and sampling.dry_sequence_breakers == ["\n"]
    await client.post("/api/chat", json={"model": "alpha", "messages": hi, "options": {"temperature": 0.5}})
    assert (last_sampling(farm).temperature, last_sampling(farm).min_p) == (0.5, 0.1)
    await client.post("/v1/messages", json={"model": "alpha", "messages": hi, "max_tokens": 4})
    assert last_sampling(farm).min_p == 0.1
    await client.post("/api/v1/generate", json={"model": "alpha", "prompt": "hi there", "min_p": 0.7})
    assert last_sampling(farm).min_p == 0.1 and last_sampling(farm).stop[0] == "THE END"
    inline = {"overrides": {"top_k": {"override": 5, "force": True}}}
    assert (await client.post("/v1/sampling/override/switch", json=inline)).status_code == 200
    assert services.presets.selected is None and list(services.presets.active) == ["top_k"]
    await client.post("/v1/completions", json={"model": "alpha", "prompt": "hi", "top_k": 50})
    assert last_sampling(farm).top_k == 5 and last_sampling(farm).min_p is None
    assert (await client.post("/v1/sampling/override/unload")).json() is None
    await client.post("/v1/completions", json={"model": "alpha", "prompt": "hi", "top_k": 50})
    assert last_sampling(farm).top_k == 50


async def test_bad_switches(app: tuple[Services, httpx.AsyncClient]) -> None:
    services, client = app
    for body in (
        {},
        {"preset": "nothing"},
        {"preset": "../creative"},
        {"preset": "broken"},
        {"overrides": {"top_p": {"override": -1}}},
        {"overrides": [1]},
        {"preset": 5},
    ):
        reply = await client.post("/v1/sampling/override/switch", json=body)
        assert reply.status_code == 400 and set(reply.json()) == {"detail"}, (body, reply.text)
    assert services.presets.active == {}  # nothing half-applied


def test_a_preset_at_start_and_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "creative.yml").write_text(CREATIVE)
    presets = SamplerPresets(tmp_path, sampler_fields)
    presets.switch("creative")
    assert presets.selected == "creative" and "temperature" in presets.active
    with pytest.raises(BadRequest, match="does not exist"):
        presets.switch("other")
    assert presets.selected == "creative"  # unchanged by a failed switch


async def test_sampler_preset_setting_applies_from_start(tmp_path: Path, farm: FakeFarm) -> None:
    folder = tmp_path / "data" / "sampler_overrides"
    folder.mkdir(parents=True)
    (folder / "creative.yml").write_text(CREATIVE)
    async with running(tmp_path, farm, sampler_preset="creative") as (services, client):
        assert services.presets.selected == "creative"
        await client.post("/v1/completions", json={"model": "alpha", "prompt": "hi"})
        assert last_sampling(farm).temperature == 1.3
    with pytest.raises(SomnerError, match="sampler_preset: Sampler override preset with name gone does not exist"):
        async with running(tmp_path, farm, sampler_preset="gone"):
            pass
