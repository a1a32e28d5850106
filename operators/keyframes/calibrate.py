"""Keyframe-threshold calibration: how many keyframes each threshold gives on sample videos.

The 0.93 default was set for CLIP ViT-L/14-336's class token (``clip.feature: cls``); the
projected embedding (``embed``) and other CLIP models spread their similarities differently, so a
user embeds a sample of videos once and picks the threshold that gives the keyframe density they
want (the paper's keyframes are a few seconds apart). :func:`match_threshold` finds the
threshold at which one feature gives the keyframe counts another gives at its threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from operators.keyframes.select import KeyframeConfig, select_keyframes

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.97)


@dataclass(frozen=True)
class CalibrationRow:
    """Keyframe counts over all sample videos for one threshold."""

    threshold: float
    mean_keyframes: float
    median_keyframes: float
    min_keyframes: int
    max_keyframes: int
    seconds_per_keyframe: float  # total video time / total keyframes
    counts: tuple[int, ...]  # per video, in input order

    @property
    def keyframes_per_minute(self) -> float:
        return 60.0 / self.seconds_per_keyframe if self.seconds_per_keyframe > 0 else float("nan")


def calibrate(
    embeddings_per_video: Sequence[np.ndarray],
    timestamps_per_video: Sequence[Sequence[float]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    base: KeyframeConfig | None = None,
    durations: Sequence[float] | None = None,
) -> list[CalibrationRow]:
    """Run :func:`select_keyframes` at every threshold (other rules from ``base``) on each video.

    ``durations`` (seconds per video) give the video time per keyframe; without them, the span
    of the sampled timestamps. Blank skipping is not applied here (it needs pixels and barely
    changes the counts).
    """
    if len(embeddings_per_video) != len(timestamps_per_video):
        raise ValueError("one timestamp list per video is needed")
    base = (base or KeyframeConfig()).model_copy(update={"skip_leading_blank": False})
    if durations is not None and len(durations) == len(timestamps_per_video):
        spans = [float(d) for d in durations]
    else:
        spans = [float(ts[-1]) - float(ts[0]) if len(ts) else 0.0 for ts in timestamps_per_video]
    rows = []
    for threshold in thresholds:
        config = base.model_copy(update={"threshold": float(threshold)})
        counts = tuple(
            len(select_keyframes(emb, ts, config))
            for emb, ts in zip(embeddings_per_video, timestamps_per_video, strict=True)
        )
        total = sum(counts)
        arr = np.asarray(counts or (0,))
        rows.append(
            CalibrationRow(
                threshold=float(threshold),
                mean_keyframes=float(arr.mean()),
                median_keyframes=float(np.median(arr)),
                min_keyframes=int(arr.min()),
                max_keyframes=int(arr.max()),
                seconds_per_keyframe=sum(spans) / total if total else float("nan"),
                counts=counts,
            )
        )
    return rows


def format_calibration_table(rows: Sequence[CalibrationRow], default: float | None = 0.93) -> str:
    """A markdown table, one line per threshold; ``default`` is marked."""
    lines = [
        "| threshold | mean keyframes/video | median | min | max | keyframes per minute | seconds per keyframe |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mark = " (default)" if default is not None and abs(row.threshold - default) < 1e-9 else ""
        lines.append(
            f"| {row.threshold:.3f}{mark} | {row.mean_keyframes:.2f} | {row.median_keyframes:.1f} "
            f"| {row.min_keyframes} | {row.max_keyframes} | {row.keyframes_per_minute:.2f} "
            f"| {row.seconds_per_keyframe:.2f} |"
        )
    return "\n".join(lines)


def calibrate_batch(
    batch: dict[str, np.ndarray],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    base: KeyframeConfig | None = None,
) -> list[CalibrationRow]:
    """:func:`calibrate` over a batch that went through ``SampleFrames`` and ``ClipEncode``
    (rejected rows, i.e. rows without embeddings, are left out)."""
    embeddings, timestamps = [], []
    for emb, ts in zip(batch["frame_embeddings"], batch["frame_timestamps"], strict=True):
        if emb is None or ts is None or len(ts) == 0:
            continue
        embeddings.append(np.asarray(list(emb), dtype=np.float32))
        timestamps.append([float(t) for t in ts])
    return calibrate(embeddings, timestamps, thresholds, base)
