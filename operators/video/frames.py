"""Encoding of sampled frames as they travel between stages (JPEG bytes in a list column)."""

from __future__ import annotations

import io

import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encode an HxWx3 uint8 RGB array as JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG bytes into an HxWx3 uint8 RGB array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def fit_size(width: int, height: int, short_side: int | None, max_pixels: int) -> tuple[int, int]:
    """Output size keeping the aspect ratio: short side scaled to ``short_side`` (never
    upscaled), then shrunk further while width x height exceeds ``max_pixels``. Even sizes,
    since most pixel formats and encoders want them."""
    scale = 1.0
    if short_side and min(width, height) > short_side:
        scale = short_side / min(width, height)
    if width * height * scale * scale > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    if w * h > max_pixels:  # rounding up to even sizes must not break the cap
        w = max(2, int(width * scale / 2) * 2)
        h = max(2, int(height * scale / 2) * 2)
    return w, h
