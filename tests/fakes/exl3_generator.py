"""A CPU fake of ExLlamaV3's generator (the `somner.exl3.generator.Generator` protocol), and EXL3 model folders
for it, so `somner worker-exl3` runs as a real process in tests without a GPU.

The worker loads it when `SOMNER_EXL3_GENERATOR=tests.fakes.exl3_generator:load` (and the repository root is on
PYTHONPATH). It lives here, not in the package: nothing installed can serve made-up text by mistake.

Tokens are characters (id 256 + code point) plus four special tokens. Every step (`iterate`) gives each running
job one more character of its answer, so jobs run side by side in one step as in a real batch. The answer comes
from the last user turn of a ChatML prompt (or the last line of a plain prompt):
  `say: TEXT`   answers TEXT, then the end-of-generation token;
  `count: N`    answers "1 2 3 ... N", then the end-of-generation token;
  anything else answers "You said: " and the text.
A job with a JSON-schema filter answers a small instance of the schema instead; a GBNF filter is recorded, not
enforced. Without stop tokens (`ignore_eos`) the answer repeats until `max_tokens`. The folder's
`fake_generator.json` sets a delay per step, the load's progress steps, or a load failure.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from somner.exl3.folder import read_folder, sizes
from somner.exl3.generator import Constraint, EndReason, Event, Exl3Config, Exl3Job, ModelInfo

SPECIALS = ("<s>", "</s>", "<|im_start|>", "<|im_end|>")
BOS, EOS, IM_START, IM_END = range(4)
_CHARS = 256  # id of code point 0
VOCAB = _CHARS + 0x110000
_SPECIAL_PATTERN = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_folder(path: Path, *, template: str | None = CHATML, quant_method: str = "exl3", **behaviour: Any) -> Path:
    """An EXL3 model folder for the fake: config files, a small weights file, and `fake_generator.json` with
    `behaviour` (step_delay, load_steps, load_delay, fail_load)."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["FakeForCausalLM"],
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": 2048,
        "vocab_size": VOCAB,
        "eos_token_id": EOS,
        "bos_token_id": BOS,
        "quantization_config": {"quant_method": quant_method, "bits": 4.0},
    }
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer_config: dict[str, Any] = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
    if template is not None:
        tokenizer_config["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    (path / "tokenizer.json").write_text("{}", encoding="utf-8")
    (path / "model.safetensors").write_bytes(b"\0" * 4096)
    (path / "fake_generator.json").write_text(json.dumps(behaviour), encoding="utf-8")
    return path


def instance_of(schema: Any) -> Any:
    """A small value the schema accepts (the subset of JSON Schema the tests use); ValueError for the rest."""
    if not isinstance(schema, dict):
        raise ValueError("a schema must be an object")
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        required = schema.get("required", list(properties))
        return {name: instance_of(properties[name]) for name in required if name in properties}
    if kind == "array":
        return [instance_of(schema.get("items", {"type": "string"}))] * max(1, schema.get("minItems", 1))
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 3))
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    raise ValueError(f"unsupported type {kind!r}")


@dataclass(frozen=True, slots=True)
class FakeFilter:
    constraint: Constraint
    text: str | None  # what the job answers (JSON schemas); None: not enforced (GBNF)


class _Running:
    def __init__(self, job: Exl3Job, answer: str) -> None:
        self.job = job
        self.answer = answer or " "
        self.at = 0  # characters of the answer given
        self.generated = 0


class FakeGenerator:
    def __init__(self, config: Exl3Config, behaviour: dict[str, Any]) -> None:
        folder = read_folder(config.model_path)
        self.config = config
        self.step_delay = float(behaviour.get("step_delay", 0.0))
        max_seq_len, cache_size = sizes(
            config.max_seq_len, config.cache_size, config.max_batch_size, folder.trained_context
        )
        self._info = ModelInfo(
            architecture=folder.architecture,
            description=f"fake exl3 {config.model_path.name}",
            vocab_size=VOCAB,
            hidden_size=folder.hidden_size,
            max_seq_len=max_seq_len,
            cache_size=cache_size,
            trained_context=folder.trained_context,
            bos_text=folder.bos_text,
            eos_text=folder.eos_text,
            add_bos=folder.add_bos,
            chat_template=folder.chat_template,
            stop_tokens=folder.eos_ids | {EOS},
            size_bytes=4096,
        )
        self._running: list[_Running] = []
        self.most_at_once = 0

    @property
    def info(self) -> ModelInfo:
        return self._info

    def encode(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        tokens = [BOS] if add_bos else []
        parts = _SPECIAL_PATTERN.split(text) if special else [text]
        for part in parts:
            if special and part in SPECIALS:
                tokens.append(SPECIALS.index(part))
            else:
                tokens.extend(_CHARS + ord(c) for c in part)
        return tokens

    def decode(self, tokens: Sequence[int], *, special: bool) -> str:
        out = []
        for token in tokens:
            if token >= _CHARS:
                out.append(chr(token - _CHARS))
            elif token < len(SPECIALS) and special:
                out.append(SPECIALS[token])
        return "".join(out)

    def make_filter(self, constraint: Constraint) -> object:
        if constraint.json_schema is not None:
            return FakeFilter(constraint, json.dumps(instance_of(constraint.json_schema)))
        if "::=" not in (constraint.gbnf or ""):
            raise ValueError("not a GBNF grammar (no rule)")
        return FakeFilter(constraint, None)

    def _answer(self, job: Exl3Job) -> str:
        if isinstance(job.filter, FakeFilter) and job.filter.text is not None:
            return job.filter.text
        turns = self.decode(job.prompt, special=True).split("<|im_start|>user\n")
        if len(turns) > 1:
            said = turns[-1].split("<|im_end|>")[0]
        else:
            said = self.decode(job.prompt, special=False).strip().rsplit("\n", 1)[-1]
        if said.startswith("say: "):
            return said.removeprefix("say: ")
        if said.startswith("count: "):
            return " ".join(str(i) for i in range(1, int(said.removeprefix("count: ")) + 1))
        return f"You said: {said}"

    def enqueue(self, job: Exl3Job) -> None:
        if len(self._running) >= self.config.max_batch_size:
            raise AssertionError("the engine gave the generator more jobs than max_batch_size")
        self._running.append(_Running(job, self._answer(job)))

    def cancel(self, job: Exl3Job) -> None:
        self._running = [r for r in self._running if r.job is not job]

    def iterate(self) -> list[Event]:
        if self.step_delay:
            time.sleep(self.step_delay)
        self.most_at_once = max(self.most_at_once, len(self._running))
        events = []
        for running in list(self._running):
            job = running.job
            if running.at >= len(running.answer) and job.stop_tokens:
                end: EndReason = (
                    "end_filter" if isinstance(job.filter, FakeFilter) and job.filter.text else "stop_token"
                )
                events.append(Event(job, tokens=1, end=end, total_tokens=running.generated + 1))
                self._running.remove(running)
                continue
            text = running.answer[running.at % len(running.answer)]
            running.at += 1
            running.generated += 1
            if running.generated >= job.max_tokens:
                events.append(Event(job, text=text, tokens=1, end="max_new_tokens", total_tokens=running.generated))
                self._running.remove(running)
            else:
                events.append(Event(job, text=text, tokens=1))
        return events

    def close(self) -> None:
        self._running.clear()


def load(config: Exl3Config, on_progress: Callable[[float], None]) -> FakeGenerator:
    """The fake's `GeneratorFactory`."""
    behaviour = json.loads((config.model_path / "fake_generator.json").read_text(encoding="utf-8"))
    if behaviour.get("fail_load"):
        raise RuntimeError(str(behaviour["fail_load"]))
    steps = int(behaviour.get("load_steps", 4))
    for step in range(1, steps + 1):
        time.sleep(float(behaviour.get("load_delay", 0.0)))
        on_progress(step / steps)
    return FakeGenerator(config, behaviour)
