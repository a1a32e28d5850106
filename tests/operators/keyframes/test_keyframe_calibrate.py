"""Threshold calibration counts keyframes per threshold on known sequences."""

from __future__ import annotations

import numpy as np

from operators.base import object_column
from operators.keyframes.calibrate import calibrate, calibrate_batch, format_calibration_table
from operators.keyframes.select import KeyframeConfig


def pan(n: int, step_deg: float) -> np.ndarray:
    a = np.deg2rad(np.arange(n) * step_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def test_counts_grow_with_threshold() -> None:
    videos = [pan(7, 10.0), pan(3, 0.0)]
    timestamps = [[2.0 * i for i in range(7)], [0.0, 2.0, 4.0]]
    base = KeyframeConfig(keep_last="min_gap", min_gap_s=100.0)
    rows = calibrate(videos, timestamps, [0.5, 0.9, 0.99], base)
    # 10 deg steps: similarity to the latest keyframe after k steps is cos(10k deg).
    assert [r.counts for r in rows] == [((1, 1)), ((3, 1)), ((7, 1))]
    assert rows[1].mean_keyframes == 2.0 and rows[1].max_keyframes == 3 and rows[1].min_keyframes == 1
    assert rows[1].seconds_per_keyframe == (12.0 + 4.0) / 4

    table = format_calibration_table(rows, default=0.9)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and "0.900 (default)" in lines[3] and "| 4.00 |" in lines[3]


def test_calibrate_batch_skips_rows_without_embeddings() -> None:
    batch = {
        "frame_embeddings": object_column([pan(4, 30.0), None]),
        "frame_timestamps": object_column([[0.0, 2.0, 4.0, 6.0], None]),
    }
    rows = calibrate_batch(batch, [0.93])
    assert rows[0].counts == (4,)
