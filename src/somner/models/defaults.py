"""Per-model request defaults: values a model's configuration supplies when a request leaves them out.

Applied by every API dialect after the model is known; request values always win. A default system prompt is
added only to chats that have none, with `{now}` and `{date}` filled in at request time.
"""

from __future__ import annotations

import datetime as dt

from somner.core import ChatRequest, CompletionRequest, Message, ReasoningFormat, SamplingParams
from somner.settings.models import ModelDefaults, ModelEntry

_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "max_tokens",
)


def _sampling(params: SamplingParams, defaults: ModelDefaults) -> None:
    for name in _SAMPLING:
        if getattr(params, name) is None and getattr(defaults, name) is not None:
            setattr(params, name, getattr(defaults, name))
    if not params.stop and defaults.stop:
        params.stop = list(defaults.stop)


def system_text(template: str, now: dt.datetime) -> str:
    """The default system prompt with {now} and {date} replaced (other braces are left alone)."""
    return template.replace("{now}", now.isoformat(timespec="seconds")).replace("{date}", now.date().isoformat())


def apply_to_chat(request: ChatRequest, defaults: ModelDefaults | None, now: dt.datetime | None = None) -> None:
    if defaults is None:
        return
    _sampling(request.sampling, defaults)
    if defaults.system and not any(m.role in ("system", "developer") for m in request.messages):
        moment = now or dt.datetime.now().astimezone()
        request.messages.insert(0, Message(role="system", content=system_text(defaults.system, moment)))


def apply_to_completion(request: CompletionRequest, defaults: ModelDefaults | None) -> None:
    if defaults is not None:
        _sampling(request.sampling, defaults)


def apply_reasoning(request: ChatRequest, entry: ModelEntry) -> None:
    """The model's reasoning format, and its thinking budget for requests that turn thinking on without a budget
    of their own (or say nothing about it; a model budget of 0 turns thinking off for those)."""
    options = request.reasoning
    if options.format is None and entry.reasoning_format is not None:
        options.format = ReasoningFormat(entry.reasoning_format)
    budget = entry.reasoning_budget
    if budget is None or options.budget_tokens is not None or options.enabled is False:
        return
    if budget > 0:
        options.budget_tokens = budget
    elif options.enabled is None:
        options.enabled = False
