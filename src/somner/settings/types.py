"""Value types shared by the settings sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from somner.durations import format_duration, parse_duration
from somner.models.names import validate_model_name

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Seconds; accepts `300`, `300s`, `5m`, `1h`."""

ModelName = Annotated[str, BeforeValidator(validate_model_name)]


class Section(BaseModel):
    """A settings section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
