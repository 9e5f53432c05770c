"""How much the generated-request suites do: a fixed seed and counts sized for CI, or `--long` (or
SOMNER_FUZZ_LONG=1) for ten times as many on a random seed."""

from __future__ import annotations

import os

FUZZ_MODEL = "fuzz"
SEED = 19  # CI's fixed seed (issue 19)
PER_DIALECT = 1000  # generated requests per dialect in CI (the floor)
LONG_FACTOR = 10


def long_mode(option: bool) -> bool:
    return option or os.environ.get("SOMNER_FUZZ_LONG", "") not in ("", "0")
