"""Keyframe counts of the two CLIP features side by side, and the ``embed`` threshold that gives
the keyframes ``cls`` gives at the paper's threshold (what ``sg4v calibrate-keyframes`` prints).

The counts move in steps as the threshold moves, and not always in one direction (a keyframe
taken earlier changes what later frames are compared with), so the match is searched on a
grid refined around the best value (0.01, then 0.001, then 0.0001), not by bisection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.keyframes.calibrate import calibrate, format_calibration_table
from operators.keyframes.select import KeyframeConfig

FEATURE_NAMES = {
    "cls": "class token before ln_post (the paper's feature)",
    "embed": "open_clip encode_image (projected embedding)",
}


@dataclass(frozen=True)
class ThresholdMatch:
    """The threshold whose per-video counts come closest to ``target``, and the range of
    searched thresholds that come as close (``threshold`` is the one nearest its middle)."""

    threshold: float
    low: float
    high: float
    counts: tuple[int, ...]
    target: tuple[int, ...]

    @property
    def videos_differing(self) -> int:
        return sum(c != t for c, t in zip(self.counts, self.target, strict=True))

    @property
    def keyframes_off(self) -> int:
        """Keyframes gained or lost over all videos, summed per video."""
        return sum(abs(c - t) for c, t in zip(self.counts, self.target, strict=True))


def match_threshold(
    target: Sequence[int],
    embeddings_per_video: Sequence[np.ndarray],
    timestamps_per_video: Sequence[Sequence[float]],
    base: KeyframeConfig | None = None,
    low: float = 0.5,
    high: float = 0.9999,
) -> ThresholdMatch:
    """The threshold in [low, high] at which these embeddings give ``target`` keyframes per
    video: the same total first, then the fewest keyframes off per video."""
    target = tuple(int(t) for t in target)
    if len(target) != len(embeddings_per_video):
        raise ValueError(f"{len(target)} target counts for {len(embeddings_per_video)} videos")
    scored: dict[float, tuple[tuple[int, int], tuple[int, ...]]] = {}

    def evaluate(grid: np.ndarray) -> None:
        todo = [t for t in (round(float(g), 6) for g in grid) if low <= t <= high and t not in scored]
        for row in calibrate(embeddings_per_video, timestamps_per_video, todo, base) if todo else []:
            off = sum(abs(c - t) for c, t in zip(row.counts, target, strict=True))
            scored[row.threshold] = ((abs(sum(row.counts) - sum(target)), off), row.counts)

    evaluate(np.arange(low, high + 1e-9, 0.01))
    for step in (0.001, 0.0001):
        best = min(scored.items(), key=lambda item: item[1][0])[0]
        evaluate(np.arange(best - 10 * step, best + 10 * step + 1e-9, step))
    best_score = min(score for score, _ in scored.values())
    tied = sorted(t for t, (score, _) in scored.items() if score == best_score)
    # The middle of the band (among thresholds that tie) leaves the most room for other videos.
    middle = (tied[0] + tied[-1]) / 2
    chosen = min(tied, key=lambda t: abs(t - middle))
    return ThresholdMatch(chosen, tied[0], tied[-1], scored[chosen][1], target)


def format_feature_comparison(
    rows_by_feature: Mapping[str, Sequence[Mapping[str, Any]]],
    thresholds: Sequence[float],
    base: KeyframeConfig,
) -> str:
    """Tables per feature, the matched ``embed`` threshold and counts per video.

    ``rows_by_feature``: per feature, rows with ``video_id``, ``frame_embeddings``,
    ``frame_timestamps`` and optionally ``duration``; videos present for every feature count.
    """
    by_id = {f: {str(r["video_id"]): r for r in rows} for f, rows in rows_by_feature.items()}
    ids = sorted(set.intersection(*(set(v) for v in by_id.values()))) if by_id else []
    if not ids:
        return "no video came through to the CLIP encoder"
    first = by_id[next(iter(by_id))]
    timestamps = [[float(t) for t in first[i]["frame_timestamps"]] for i in ids]
    durations = [_duration(first[i], ts) for i, ts in zip(ids, timestamps, strict=True)]
    embeddings = {f: [np.asarray(list(rows[i]["frame_embeddings"]), dtype=np.float32) for i in ids]
                  for f, rows in by_id.items()}
    lines = []
    for feature, embs in embeddings.items():
        table = calibrate(embs, timestamps, thresholds, base, durations)
        lines += [f"feature {feature}: {FEATURE_NAMES.get(feature, feature)}",
                  format_calibration_table(table, default=base.threshold), ""]
    if {"cls", "embed"} <= embeddings.keys():
        lines += _matched(ids, durations, embeddings, timestamps, base)
    return "\n".join(lines).rstrip()


def _matched(ids: list[str], durations: list[float], embeddings: dict[str, list[np.ndarray]],
             timestamps: list[list[float]], base: KeyframeConfig) -> list[str]:
    t = base.threshold
    (reference,) = calibrate(embeddings["cls"], timestamps, [t], base, durations)
    (same_t,) = calibrate(embeddings["embed"], timestamps, [t], base, durations)
    match = match_threshold(reference.counts, embeddings["embed"], timestamps, base)
    lines = [
        f"embed threshold giving the keyframes cls gives at {t:.3f}: {match.threshold:.4f} "
        f"(as close from {match.low:.4f} to {match.high:.4f}): {sum(match.counts)} keyframes vs "
        f"{sum(reference.counts)}, {match.videos_differing} of {len(ids)} videos differ "
        f"({match.keyframes_off} keyframes off)",
        f"set it with --set keyframes.threshold={match.threshold:.4f} --set clip.feature=embed",
        "",
        f"| video | seconds | cls @ {t:.3f} | embed @ {t:.3f} | embed @ {match.threshold:.4f} |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, video_id in enumerate(ids):
        lines.append(f"| {video_id} | {durations[k]:.1f} | {reference.counts[k]} | {same_t.counts[k]} "
                     f"| {match.counts[k]} |")
    return lines


def _duration(row: Mapping[str, Any], timestamps: Sequence[float]) -> float:
    value = row.get("duration")
    try:
        if value is not None and float(value) > 0:
            return float(value)
    except (TypeError, ValueError):
        pass
    return float(timestamps[-1]) - float(timestamps[0]) if len(timestamps) else 0.0
