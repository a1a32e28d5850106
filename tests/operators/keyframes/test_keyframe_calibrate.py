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


def test_keyframes_per_minute_uses_durations_when_given() -> None:
    rows = calibrate([pan(4, 30.0)], [[0.0, 2.0, 4.0, 6.0]], [0.93], durations=[8.0])
    assert rows[0].counts == (4,) and rows[0].seconds_per_keyframe == 2.0
    assert rows[0].keyframes_per_minute == 30.0
    assert "| 30.00 | 2.00 |" in format_calibration_table(rows)


def test_match_threshold_finds_the_band_that_reproduces_the_counts() -> None:
    from operators.keyframes.threshold_match import match_threshold

    # "cls": 10 deg per frame, so at 0.93 a keyframe every 3 frames (cos 20 = 0.940, cos 30 = 0.866).
    # "embed": 5 deg per frame; 3 frames (cos 15 = 0.966) but not 2 (cos 10 = 0.985) needs a
    # threshold in (0.966, 0.985].
    lengths = [7, 10, 13, 4]
    cls = [pan(n, 10.0) for n in lengths]
    embed = [pan(n, 5.0) for n in lengths]
    timestamps = [[2.0 * i for i in range(n)] for n in lengths]
    base = KeyframeConfig(keep_last="min_gap", min_gap_s=100.0)
    (target,) = calibrate(cls, timestamps, [0.93], base)
    assert target.counts == (3, 4, 5, 2)
    (naive,) = calibrate(embed, timestamps, [0.93], base)
    assert naive.counts != target.counts  # the same threshold on the other feature is wrong
    match = match_threshold(target.counts, embed, timestamps, base)
    assert np.cos(np.deg2rad(15.0)) < match.threshold <= np.cos(np.deg2rad(10.0))
    assert match.counts == target.counts and match.videos_differing == 0 and match.keyframes_off == 0
    assert match.low <= match.threshold <= match.high
    assert np.cos(np.deg2rad(15.0)) < match.low and match.high <= np.cos(np.deg2rad(10.0))


def test_match_threshold_reports_the_closest_when_none_matches() -> None:
    from operators.keyframes.threshold_match import match_threshold

    still = [np.ones((5, 2), dtype=np.float32)]  # identical frames: 1 keyframe at any threshold
    match = match_threshold([3], still, [[0.0, 2.0, 4.0, 6.0, 8.0]], KeyframeConfig(keep_last="min_gap",
                                                                                   min_gap_s=100.0))
    assert match.counts == (1,) and match.videos_differing == 1 and match.keyframes_off == 2


def test_feature_comparison_prints_both_features_and_the_matched_threshold() -> None:
    from operators.keyframes.threshold_match import format_feature_comparison

    lengths = {"a": 7, "b": 10, "c": 13}

    def rows(step: float, order: list[str]) -> list[dict]:
        return [{"video_id": v, "duration": 2.0 * lengths[v], "frame_embeddings": pan(lengths[v], step),
                 "frame_timestamps": [2.0 * i for i in range(lengths[v])]} for v in order]

    # Rows come back in any order from the pipeline, and a video may be missing from one run.
    text = format_feature_comparison(
        {"cls": rows(10.0, ["c", "a", "b"]), "embed": rows(5.0, ["a", "b", "c"])[:2] + rows(5.0, ["c"])},
        [0.9, 0.93], KeyframeConfig(keep_last="min_gap", min_gap_s=100.0))
    assert text.index("feature cls:") < text.index("feature embed:")
    assert text.count("0.930 (default)") == 2
    (line,) = [x for x in text.splitlines() if x.startswith("embed threshold giving")]
    assert "cls gives at 0.930" in line and "12 keyframes vs 12, 0 of 3 videos differ" in line
    per_video = [x for x in text.splitlines() if x.startswith("| a |") or x.startswith("| c |")]
    assert per_video[0].split("|")[2:5] == [" 14.0 ", " 3 ", " 2 "]
    assert "--set keyframes.threshold=0.9" in text and "--set clip.feature=embed" in text
