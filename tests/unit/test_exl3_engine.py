"""The ExLlamaV3 engine in process over the fake generator: request preparation (templates, tools, sampler
settings, filters, limits, refusals) and the scheduler (batches, stop strings, token limits, cancellation,
usage), plus what it reads from a model folder."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from somner.core import (
    AdapterScale,
    ChatRequest,
    Chunk,
    CompletionRequest,
    FinishReason,
    Message,
    SamplingParams,
    Tool,
    ToolChoice,
    ToolChoiceMode,
)
from somner.engine.templates import TemplateNotFound
from somner.errors import BadRequest, ContextLengthExceeded, SomnerError
from somner.exl3.folder import FolderError, architecture_family, read_folder
from somner.exl3.generator import Exl3Config, Exl3Job
from somner.exl3.runtime import Engine
from somner.exl3.scheduler import Output
from tests.fakes.exl3_generator import EOS, FakeGenerator, load, write_folder


class Harness:
    def __init__(self, folder: Path, **config: Any) -> None:
        self._queues: dict[int, queue.Queue[Chunk | SomnerError]] = {}
        self._lock = threading.Lock()
        self.progress: list[float] = []
        self.engine = Engine(
            Exl3Config(model_path=folder, model_id="fake", **config), self._sink, load, on_progress=self.progress.append
        )
        self.engine.start()

    @property
    def fake(self) -> FakeGenerator:
        generator = self.engine.generator
        assert isinstance(generator, FakeGenerator)
        return generator

    def _queue(self, job_id: int) -> queue.Queue[Chunk | SomnerError]:
        with self._lock:
            return self._queues.setdefault(job_id, queue.Queue())

    def _sink(self, outputs: Sequence[Output]) -> None:
        for job, item in outputs:
            self._queue(job.id).put(item)

    def submit(self, job: Exl3Job) -> Exl3Job:
        self._queue(job.id)
        self.engine.scheduler.submit(job)
        return job

    def chunks(self, job: Exl3Job) -> list[Chunk]:
        out: list[Chunk] = []
        while True:
            item = self._queue(job.id).get(timeout=30)
            if isinstance(item, SomnerError):
                raise item
            out.append(item)
            if item.finish_reason is not None:
                return out

    def chat(self, text: str, **sampling: Any) -> list[Chunk]:
        request = ChatRequest(model="fake", messages=[Message("user", text)], sampling=SamplingParams(**sampling))
        return self.chunks(self.submit(self.engine.chat_jobs(request)[0]))

    def close(self) -> None:
        self.engine.close()


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(write_folder(tmp_path / "fake-exl3"), max_batch_size=2, max_seq_len=2048)
    yield h
    h.close()


def chat(text: str, **sampling: Any) -> ChatRequest:
    return ChatRequest(model="fake", messages=[Message("user", text)], sampling=SamplingParams(**sampling))


def test_loads_with_progress_and_the_folders_template(harness: Harness) -> None:
    assert harness.progress == [0.0, 0.25, 0.5, 0.75, 1.0]
    info = harness.engine.info()
    assert info["engine"] == "exllamav3"
    assert info["template"] == "model"
    assert info["n_ctx"] == 2048
    assert info["cache_size"] == 4096  # (room for both sequences' whole context)
    prompt = harness.engine.render_chat(chat("hi"))
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_answers_with_usage_and_timings(harness: Harness) -> None:
    chunks = harness.chat("say: Hello")
    assert text_of(chunks) == "Hello"
    last = chunks[-1]
    assert last.finish_reason is FinishReason.STOP
    assert last.usage is not None
    # BOS + the rendered prompt, a character a token and a special token one; the answer and its end token.
    rendered = harness.engine.render_chat(chat("say: Hello"))
    assert last.usage.prompt_tokens == 1 + len(re.sub(r"<\|im_(start|end)\|>", "#", rendered))
    assert last.usage.completion_tokens == len("Hello") + 1
    assert last.timings is not None


def test_a_stop_string_ends_the_text_before_it(harness: Harness) -> None:
    chunks = harness.chat("say: one two STOP three", stop=["STOP", "never"])
    assert text_of(chunks) == "one two "
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert chunks[-1].stop_sequence == "STOP"
    assert harness.fake.most_at_once <= 2


def test_a_held_back_prefix_of_a_stop_string_is_released_at_the_end(harness: Harness) -> None:
    assert text_of(harness.chat("say: almost ST", stop=["STOP"])) == "almost ST"


def test_max_tokens_ends_with_length(harness: Harness) -> None:
    chunks = harness.chat("count: 100", max_tokens=5)
    assert text_of(chunks) == "1 2 3"
    assert chunks[-1].finish_reason is FinishReason.LENGTH
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_ignore_eos_runs_to_max_tokens(harness: Harness) -> None:
    chunks = harness.chat("say: ab", max_tokens=5, ignore_eos=True)
    assert text_of(chunks) == "ababa"
    assert chunks[-1].finish_reason is FinishReason.LENGTH


def test_jobs_run_together_and_the_rest_wait_for_a_slot(harness: Harness) -> None:
    jobs = [harness.submit(harness.engine.chat_jobs(chat(f"say: {'x' * (10 + i)}"))[0]) for i in range(4)]
    texts = [text_of(harness.chunks(job)) for job in jobs]
    assert texts == ["x" * (10 + i) for i in range(4)]
    assert harness.fake.most_at_once == 2  # (max_batch_size; the fake fails a job given beyond it)
    stats = harness.engine.scheduler.stats.snapshot()
    assert stats["finished"] == 4
    assert stats["steps"] < stats["generated_tokens"]


def test_cancelling_running_and_queued_jobs(harness: Harness) -> None:
    jobs = [harness.submit(harness.engine.chat_jobs(chat("count: 100000"))[0]) for _ in range(3)]
    harness._queue(jobs[0].id).get(timeout=30)  # the first is running
    for job in jobs:
        harness.engine.scheduler.cancel(job.id)
    done = harness.submit(harness.engine.chat_jobs(chat("say: after"))[0])
    assert text_of(harness.chunks(done)) == "after"
    stats = harness.engine.scheduler.stats.snapshot()
    assert stats["cancelled"] == 3
    assert stats["active"] == 0


def test_choices_share_the_prompt_and_seeds_step(harness: Harness) -> None:
    request = chat("say: hi", seed=7)
    request.n = 3
    jobs = harness.engine.chat_jobs(request)
    assert [job.sampling.seed for job in jobs] == [7, 8, 9]
    assert len({job.id for job in jobs}) == 3 and all(job.prompt == jobs[0].prompt for job in jobs)


def test_sampler_settings_keep_llama_server_defaults(harness: Harness) -> None:
    (job,) = harness.engine.chat_jobs(chat("hi", temperature=0.0, top_k=5, repeat_last_n=-1, logit_bias={300: 2.0}))
    assert (job.sampling.temperature, job.sampling.top_k, job.sampling.top_p, job.sampling.min_p) == (
        0.0,
        5,
        0.95,
        0.05,
    )
    assert job.sampling.penalty_range == -1
    assert job.sampling.logit_bias == {300: 2.0}
    assert job.stop_tokens == frozenset({EOS})


@pytest.mark.parametrize(
    ("sampling", "named"),
    [
        ({"typical_p": 0.5}, "typical_p"),
        ({"mirostat": 2}, "mirostat"),
        ({"dry_multiplier": 0.8, "top_a": 0.1}, "top_a, dry_multiplier"),
        ({"logprobs": 2}, "logprobs"),
    ],
)
def test_samplers_exllamav3_lacks_are_refused(harness: Harness, sampling: dict[str, Any], named: str) -> None:
    with pytest.raises(BadRequest, match=f"does not support {named}") as info:
        harness.engine.chat_jobs(chat("hi", **sampling))
    assert info.value.code == "unsupported"


def test_neutral_values_of_those_samplers_are_fine(harness: Harness) -> None:
    harness.engine.chat_jobs(chat("hi", typical_p=1.0, tfs=1.0, mirostat=0, top_n_sigma=-1.0, dry_multiplier=0.0))


def test_tokens_outside_the_vocabulary_are_refused(harness: Harness) -> None:
    with pytest.raises(BadRequest, match="'logit_bias' names token"):
        harness.engine.chat_jobs(chat("hi", logit_bias={10**8: 1.0}))
    with pytest.raises(BadRequest, match="outside the vocabulary"):
        harness.engine.completion_jobs(CompletionRequest(model="fake", prompt=[1, -5]))


def test_a_json_schema_is_enforced_by_a_filter(harness: Harness) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}}}
    chunks = harness.chat("hi", json_schema=schema)
    assert json.loads(text_of(chunks)) == {"city": "xxx", "n": 1}


def test_a_schema_the_filter_cannot_use_is_a_400(harness: Harness) -> None:
    with pytest.raises(BadRequest, match="The JSON schema cannot be enforced") as info:
        harness.engine.chat_jobs(chat("hi", json_schema={"type": "bogus"}))
    assert info.value.code == "invalid_schema"
    with pytest.raises(BadRequest, match="The grammar cannot be used"):
        harness.engine.chat_jobs(chat("hi", grammar="not a grammar"))


def test_a_forced_tool_call_gets_a_grammar_filter(harness: Harness) -> None:
    tool = Tool(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    request = chat("hi")
    request.tools = [tool]
    request.tool_choice = ToolChoice(mode=ToolChoiceMode.REQUIRED)
    (job,) = harness.engine.chat_jobs(request)
    constraint = getattr(job.filter, "constraint", None)
    assert constraint is not None and constraint.gbnf is not None and "tool_call" in constraint.gbnf
    prompt = harness.engine.render_chat(request)
    assert "get_weather" in prompt  # (the generic tool prompt: this template renders no tools itself)


def test_a_prompt_that_fills_the_context_is_refused(harness: Harness) -> None:
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 2048"):
        harness.engine.completion_jobs(CompletionRequest(model="fake", prompt="x" * 2100))


def test_requests_cannot_choose_lora_adapters(harness: Harness) -> None:
    request = chat("hi")
    request.lora = [AdapterScale(scale=0.5, id=0)]
    with pytest.raises(BadRequest, match="applies the model's LoRA adapters") as info:
        harness.engine.chat_jobs(request)
    assert info.value.param == "lora"


def test_no_embeddings(harness: Harness) -> None:
    with pytest.raises(BadRequest, match="serves no embeddings"):
        asyncio.run(harness.engine.embed(["hi"]))


def test_tokenizer_surface(harness: Harness) -> None:
    model = harness.engine.model
    tokens = model.tokenize("a<|im_end|>", add_special=True, parse_special=True)
    assert tokens == [0, 256 + ord("a"), 3]
    assert model.detokenize(tokens, special=True) == "<s>a<|im_end|>"
    assert model.detokenize(tokens, special=False) == "a"
    assert model.piece(3, special=True) == b"<|im_end|>"
    assert not model.valid_token(-1)
    assert harness.engine.tokenize_prompt("<s>x") == [0, 256 + ord("x")]  # (no second BOS)


def test_without_a_template_in_the_folder_one_is_chosen_or_configured(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "bare", template=None)
    engine = Engine(Exl3Config(model_path=folder, model_id="bare"), lambda outputs: None, load)
    assert engine.template is not None and engine.template.label == "chatml"  # (its vocabulary has <|im_start|>)
    engine.close()
    engine = Engine(Exl3Config(model_path=folder, model_id="bare", template="llama3"), lambda outputs: None, load)
    assert engine.template is not None and engine.template.label == "llama3"
    engine.close()
    with pytest.raises(TemplateNotFound, match="neither a built-in"):
        Engine(Exl3Config(model_path=folder, model_id="bare", template="nope"), lambda outputs: None, load)


def test_a_failed_load_raises_its_reason(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "broken", fail_load="CUDA out of memory (fake)")
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        Engine(Exl3Config(model_path=folder, model_id="broken"), lambda outputs: None, load)


def test_folder_templates_in_their_other_places(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m", template=None)
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    assert read_folder(folder).chat_template == "{{ messages[0]['content'] }}"
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": named}))
    assert read_folder(folder).chat_template == "D"


def test_folder_special_tokens_and_end_tokens(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(bos_token={"content": "<|begin|>"}, add_bos_token=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 9]}))
    info = read_folder(folder)
    assert (info.bos_text, info.eos_text, info.add_bos) == ("<|begin|>", "</s>", False)
    assert info.eos_ids == frozenset({1, 7, 9})


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FolderError, match="is not a folder"):
        read_folder(tmp_path / "nowhere")
    folder = write_folder(tmp_path / "m", quant_method="awq")
    with pytest.raises(FolderError, match="not an EXL3 model"):
        read_folder(folder)
    (folder / "config.json").write_text("[1]")
    with pytest.raises(FolderError, match="not a JSON object"):
        read_folder(folder)


@pytest.mark.parametrize(
    ("name", "family"),
    [("Qwen2ForCausalLM", "qwen2"), ("Gemma3ForConditionalGeneration", "gemma3"), ("LlamaForCausalLM", "llama")],
)
def test_architecture_families(name: str, family: str) -> None:
    assert architecture_family(name) == family
