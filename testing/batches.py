"""Input batches for the caption stages, made of random frames (tests and benchmarks)."""

from __future__ import annotations

import numpy as np

from operators.base import object_column
from operators.video.frames import encode_jpeg

__all__ = ["make_batch", "video_frames"]


def video_frames(num_frames: int, seed: int, size: tuple[int, int] = (48, 64)) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_jpeg(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(num_frames)]


def make_batch(
    frame_counts: list[int],
    source_captions: list[str | None] | None = None,
    size: tuple[int, int] = (48, 64),
) -> dict[str, np.ndarray]:
    n = len(frame_counts)
    return {
        "video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
        "frames": object_column([video_frames(k, seed=i, size=size) for i, k in enumerate(frame_counts)]),
        "frame_timestamps": object_column([[2.0 * j for j in range(k)] for k in frame_counts]),
        "source_caption": object_column(source_captions or [None] * n),
    }
