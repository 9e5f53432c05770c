"""A reasoning model's thinking budget: after so many tokens of thought the engine closes the thought itself.

The scheduler feeds each generated token's text to the job's `ThinkingBudget`; once the thought has taken
`budget` tokens and is still open, `forced()` hands out the tokens that close it (`Thought.close_text`: the
closing tag, or harmony's switch to the final channel), one per step, which the scheduler uses instead of sampling
(the sampler accepts them, so penalties see them). The model then answers after a closed thought, as if it had
closed it. Requests with a grammar get no budget (a forced token could break it).
"""

from __future__ import annotations

from somner.core.reasoning import Thought


class ThinkingBudget:
    __slots__ = ("_budget", "_close", "_forced", "_splitter", "_used")

    def __init__(self, budget: int, close_tokens: list[int], thought: Thought) -> None:
        self._budget = budget
        self._close = close_tokens
        self._forced: list[int] = []
        self._splitter = thought.splitter()
        self._used = 0  # tokens of thought so far

    def forced(self) -> int | None:
        """The token to use instead of sampling this step, if any."""
        return self._forced.pop(0) if self._forced else None

    def feed(self, text: str) -> None:
        """The text of the token just generated (possibly empty: part of a character)."""
        splitter = self._splitter
        if splitter.answering:
            return
        was_thinking = splitter.thinking
        splitter.feed(text)
        if not (was_thinking and splitter.thinking):
            return  # (only tokens inside the thought count: not those that open or close it)
        self._used += 1
        if self._used >= self._budget and not self._forced and self._close:
            self._forced = list(self._close)
            self._close = []  # (closed once: a thought reopened by the model is its own business)
