from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from operators.base import object_column
from operators.video.duration_filter import DurationFilter, DurationFilterConfig


def _run(durations: list[float | None], config: DurationFilterConfig | None = None) -> dict[str, np.ndarray]:
    op = DurationFilter(config)
    op.setup()
    return op(
        {"video_id": np.array([str(i) for i in range(len(durations))]), "duration": object_column(durations)}
    )


def test_default_rejects_only_over_120_s():
    out = _run([0.5, 120.0, 120.001, 3600.0])
    assert list(out.get("reject_reason", [None] * 4)) == [None, None, "too_long", "too_long"]
    assert out["reject_stage"][2] == "duration_filter"
    assert "120.001" in out["reject_detail"][2] and "120" in out["reject_detail"][2]


def test_minimum_like_the_official_code():
    out = _run([9.99, 10.0, 60.0], DurationFilterConfig(min_duration_s=10.0))
    assert list(out["reject_reason"]) == ["too_short", None, None]
    assert "9.990" in out["reject_detail"][0]


def test_limits_off():
    out = _run([0.01, 10_000.0], DurationFilterConfig(max_duration_s=None))
    assert "reject_reason" not in out or list(out["reject_reason"]) == [None, None]


def test_missing_duration_is_rejected_not_raised():
    out = _run([None, float("nan"), 5.0])
    assert list(out["reject_reason"]) == ["no_duration", "no_duration", None]


def test_bad_config_fails_up_front():
    with pytest.raises(ValidationError):
        DurationFilterConfig(min_duration_s=30.0, max_duration_s=10.0)
    with pytest.raises(ValidationError):
        DurationFilterConfig(max_durration_s=10.0)
