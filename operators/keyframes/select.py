"""Keyframe selection over one video's frame embeddings (ShareGPT4Video, step 3).

Candidates are the sampled frames (every 2 s by default). Frame 0 is always a keyframe; a later
candidate becomes one when its cosine similarity to the *latest keyframe* (not the previous
frame) is below ``threshold``. This module is pure numpy so every rule is testable with
synthetic embeddings.

Deliberate differences from the official code: frames are never shifted in time when leading
blank frames are skipped (a keyframe keeps the timestamp of the frame it is), and timestamps
are whatever the sampler measured (real presentation times), never ``index / int(fps)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from operators.config import StrictModel


class KeyframeConfig(StrictModel):
    """How keyframes are chosen and how their images are written (config key ``keyframes``)."""

    threshold: float = Field(
        0.93,
        gt=-1.0,
        le=1.0,
        description="A candidate frame becomes a keyframe when its cosine similarity to the latest "
        "keyframe is below this. 0.93 was set for CLIP ViT-L/14-336's class token (clip.feature "
        "'cls'); recalibrate for feature 'embed' or other models (`sg4v calibrate-keyframes`).",
    )
    keep_last: Literal["always", "min_gap"] = Field(
        "always",
        description="'always': the last sampled frame is always a keyframe (as in the paper). "
        "'min_gap': only when it is at least `min_gap_s` after the last keyframe (as in the "
        "official code).",
    )
    min_gap_s: float = Field(2.0, ge=0.0, description="Gap used by keep_last='min_gap', in seconds.")
    max_keyframes: int | None = Field(
        None,
        ge=1,
        description="Optional cap on keyframes per video. Above it, the least distinct keyframes "
        "(highest similarity to the keyframe before them) are dropped one by one; the first "
        "keyframe is never dropped, nor the last one when keep_last='always' and the cap is >= 2.",
    )
    skip_leading_blank: bool = Field(
        False,
        description="Skip leading single-colour frames (black or white intros); the first "
        "non-blank frame becomes keyframe 0 with its own timestamp. If every frame is blank, "
        "frame 0 is kept.",
    )
    blank_tolerance: float = Field(
        8.0,
        ge=0.0,
        description="A frame is blank when the standard deviation of every RGB channel is at "
        "most this (0-255 scale; leaves room for compression noise).",
    )
    image_longest_side: int = Field(
        1024,
        ge=16,
        description="Longest side in pixels of the keyframe JPEGs given to the API stage "
        "(1024 as in the official code). Never upscaled.",
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the keyframe images.")
    reread: Literal["auto", "never", "always"] = Field(
        "auto",
        description="'auto': re-read keyframes from the source video at their timestamps when the "
        "sampled frames are smaller than `image_longest_side` and the source is larger than them. "
        "'never': always use the sampled frames. 'always': always re-read from the source.",
    )
    naming: Literal["index", "official"] = Field(
        "index",
        description="Keyframe file names. 'index': `keyframes/<video>/001_4004.jpg` (keyframe 1 "
        "at 4.004 s). 'official': `keyframes/<video>/frame_4.00.png`, PNG named by timestamp as "
        "in the released keyframe example, for the released captioner scripts. With "
        "`packing: archive` these are the member names inside the archives.",
    )
    packing: Literal["archive", "files"] = Field(
        "archive",
        description="'archive': each select_keyframes task writes its batch's keyframes into one "
        "uncompressed tar under keyframes/ and rows address their images by byte range "
        "(one object per select_keyframes batch of videos). 'files': one JPEG per keyframe under "
        "keyframes/<video>/ (one object per keyframe; fine for small local runs).",
    )


def is_blank(rgb: np.ndarray, tolerance: float = 8.0) -> bool:
    """True when ``rgb`` (HxWx3 uint8) is a single colour, up to ``tolerance`` (channel std)."""
    step = max(1, max(rgb.shape[:2]) // 128)  # a subsample is enough to tell a flat image
    pixels = np.asarray(rgb[::step, ::step], dtype=np.float32).reshape(-1, rgb.shape[-1])
    return bool(pixels.std(axis=0).max() <= tolerance)


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def _first_non_blank(frames: Sequence[np.ndarray], n: int, tolerance: float) -> int:
    for i in range(n):
        if not is_blank(frames[i], tolerance):
            return i
    return 0


def _cap(unit: np.ndarray, keyframes: list[int], cap: int, protect_last: bool) -> list[int]:
    """Drop the least distinct keyframes until ``cap`` are left.

    Distinctness of a keyframe is 1 - cosine similarity to the keyframe kept before it; after a
    drop, the next keyframe's distinctness is measured against its new predecessor.
    """
    kept = list(keyframes)
    while len(kept) > cap:
        candidates = range(1, len(kept) - 1 if protect_last else len(kept))
        sims = [float(unit[kept[j]] @ unit[kept[j - 1]]) for j in candidates]
        # Highest similarity goes first; ties drop the later keyframe.
        drop = max(zip(sims, candidates, strict=True), key=lambda p: (p[0], p[1]))[1]
        del kept[drop]
    return kept


def select_keyframes(
    embeddings: np.ndarray,
    timestamps: Sequence[float],
    config: KeyframeConfig,
    frames: Sequence[np.ndarray] | None = None,
) -> list[int]:
    """Indices (into the sampled frames, ascending) of one video's keyframes.

    ``embeddings``: [n, d] frame embeddings (normalized here, so any scale works).
    ``timestamps``: n presentation times in seconds, ascending.
    ``frames``: RGB frames (any indexable; only read while looking for the first non-blank frame),
    required when ``config.skip_leading_blank`` is on.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    n = len(embeddings)
    if embeddings.ndim != 2 or n != len(timestamps):
        raise ValueError(f"embeddings {embeddings.shape} do not match {len(timestamps)} timestamps")
    if n == 0:
        return []
    unit = _unit_rows(embeddings)

    first = 0
    if config.skip_leading_blank:
        if frames is None:
            raise ValueError("skip_leading_blank needs the frames")
        first = _first_non_blank(frames, n, config.blank_tolerance)

    keyframes = [first]
    for i in range(first + 1, n):
        if float(unit[i] @ unit[keyframes[-1]]) < config.threshold:
            keyframes.append(i)

    last = n - 1
    if keyframes[-1] != last:
        gap = float(timestamps[last]) - float(timestamps[keyframes[-1]])
        if config.keep_last == "always" or gap >= config.min_gap_s:
            keyframes.append(last)

    if config.max_keyframes is not None and len(keyframes) > config.max_keyframes:
        protect_last = config.keep_last == "always" and config.max_keyframes >= 2
        keyframes = _cap(unit, keyframes, config.max_keyframes, protect_last)
    return keyframes
