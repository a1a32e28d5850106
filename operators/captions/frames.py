"""Which of a video's sampled frames the short captioner looks at, and how it sees them."""

from __future__ import annotations

import numpy as np


def uniform_indices(available: int, wanted: int, exact: bool = False) -> list[int]:
    """Indices of ``wanted`` frames spread evenly over ``available`` frames.

    Each index is the centre of one of ``wanted`` equal segments, so the first and last
    frames (often fades or black) are not favoured and a single frame is the middle one.
    With fewer frames than wanted all are returned, unless ``exact``: models with a fixed
    number of temporal embeddings (GIT-VATEX takes exactly 6) then get frames repeated.
    """
    if available <= 0 or wanted <= 0:
        return []
    if available <= wanted and not exact:
        return list(range(available))
    return [int((i + 0.5) * available / wanted) for i in range(wanted)]


def frame_grid(frames: list[np.ndarray], columns: int | None = None) -> np.ndarray:
    """Tile frames (HxWx3 uint8, any sizes) into one image, row by row, for image-only
    captioners. Every tile takes the first frame's size; missing tiles stay black."""
    from PIL import Image

    n = len(frames)
    columns = columns or int(np.ceil(np.sqrt(n * 2)))  # wide grids: 8 frames -> 4 x 2
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    h, w = frames[0].shape[:2]
    grid = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        if frame.shape[:2] != (h, w):
            frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = frame
    return grid
