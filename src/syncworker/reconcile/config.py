"""The ``verify:`` section of a pipeline: a scheduled, exact comparison of source and target.

    pipelines:
      users:
        verify: {every: 1h, ignore_recent: 60s, repair: false, segments: 1000}

``PipelineConfig.verify`` (config.py) holds a ``VerifyConfig | None``; ``reconcile/scheduled.py``
runs it inside a running pipeline and ``syncworker verify`` reads the same defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from syncworker.core.durations import DurationS
from syncworker.core.fields import refuse_bool_for_number

DEFAULT_SEGMENTS = 1000
DEFAULT_IGNORE_RECENT_S = 60.0


class VerifyConfig(BaseModel):
    """When and how a running pipeline compares its source (after filter and mapping) with
    its target. Unknown keys are refused, like every other section."""

    model_config = {"extra": "forbid", "frozen": True}

    every: DurationS = Field(3600.0, gt=0, description="interval between two verify runs")
    ignore_recent: DurationS = Field(
        DEFAULT_IGNORE_RECENT_S,
        ge=0,
        description="rows changed in the last this long (still in flight) are not compared",
    )
    repair: bool = Field(
        False, description="re-sync the keys found different (through the source's resync)"
    )
    segments: int = Field(
        DEFAULT_SEGMENTS,
        ge=1,
        le=100_000,
        description="key-range segments of the first pass (each side hashes every segment "
        "in one statement)",
    )
    run_at_start: bool = Field(False, description="also run once soon after the pipeline starts")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_number(cls, value, info)
