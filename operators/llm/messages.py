"""Small builders for chat messages: text parts and keyframe image parts."""

from __future__ import annotations

import base64
import io
from typing import Any


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(jpeg: bytes, detail: str = "high") -> dict[str, Any]:
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def user_message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def resize_for_api(image_bytes: bytes, longest_side: int, quality: int = 90) -> bytes:
    """A JPEG whose longest side is at most ``longest_side`` (never upscaled). Images already
    small enough and already JPEG are returned as they are, so their cache keys stay stable."""
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as image:
        if max(image.size) <= longest_side and image.format == "JPEG":
            return image_bytes
        image = image.convert("RGB")
        scale = min(1.0, longest_side / max(image.size))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        return out.getvalue()
