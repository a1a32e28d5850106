"""Duration filter: drop clips too long (default > 120 s, as in ShareGPT4Video) or too short."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from operators.base import Batch, Operator, Resources, batch_size_of, reject
from operators.config import StrictModel


class DurationFilterConfig(StrictModel):
    max_duration_s: float | None = Field(
        120.0,
        gt=0,
        description="Reject clips longer than this ('too_long'); None turns the limit off. "
        "ShareGPT4Video drops videos over 120 s.",
    )
    min_duration_s: float | None = Field(
        None,
        ge=0,
        description="Reject clips shorter than this ('too_short'); None turns the limit off. "
        "The official ShareGPT4Video code skips videos of 10 s or less: "
        "set 10.0 (a clip of exactly 10 s is then kept) to get close to it.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> DurationFilterConfig:
        if (
            self.min_duration_s is not None
            and self.max_duration_s is not None
            and self.min_duration_s > self.max_duration_s
        ):
            raise ValueError("min_duration_s must not exceed max_duration_s")
        return self


def duration_verdict(duration: float, config: DurationFilterConfig) -> tuple[str, str] | None:
    """``(reason, detail)`` when the clip fails a limit, else None. Limits are inclusive."""
    if config.max_duration_s is not None and duration > config.max_duration_s:
        return "too_long", f"duration {duration:.3f} s > max_duration_s {config.max_duration_s} s"
    if config.min_duration_s is not None and duration < config.min_duration_s:
        return "too_short", f"duration {duration:.3f} s < min_duration_s {config.min_duration_s} s"
    return None


class DurationFilter(Operator):
    """Reject clips whose probed ``duration`` falls outside the configured limits."""

    name: ClassVar[str] = "duration_filter"
    input_columns: ClassVar[tuple[str, ...]] = ("duration",)
    output_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, config: DurationFilterConfig | None = None, resources: Resources | None = None
    ) -> None:
        super().__init__(config or DurationFilterConfig(), resources)

    def default_resources(self) -> Resources:
        return Resources(num_cpus=0.1, batch_size=256)

    def __call__(self, batch: Batch) -> Batch:
        for i in range(batch_size_of(batch)):
            value: Any = batch["duration"][i]
            if value is None or value != value:
                reject(batch, i, self.name, "no_duration", "duration is missing (row not probed?)")
                continue
            verdict = duration_verdict(float(value), self.config)
            if verdict is not None:
                reject(batch, i, self.name, *verdict)
        return batch
