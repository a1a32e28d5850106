"""Token estimates made before a call, for the tokens/min budget.

Text: tiktoken when the model's encoding file is available offline, else a documented estimate.
Images: the provider's published rule for the chosen detail. Estimates err on the high side;
the limiter reconciles them with the usage each response reports.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

logger = logging.getLogger(__name__)

# OpenAI's chat format adds a few tokens per message and primes the reply (their cookbook's
# "How to count tokens" recipe): 3 per message, 3 for the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
DEFAULT_ENCODING = "o200k_base"
_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


def estimate_text_tokens_fallback(text: str) -> int:
    """UTF-8 bytes / 3, rounded up.

    English BPE averages about 4 characters (= bytes) per token, so this over-counts English by
    about a third (the safety margin); CJK text is about 3 bytes and 1 token per character, so it
    stays close there. Over-counting only slows the limiter until usage is reconciled.
    """
    return math.ceil(len(text.encode("utf-8")) / 3)


def _encoding_name(model: str) -> str:
    try:
        import tiktoken.model

        return tiktoken.model.encoding_name_for_model(model)
    except (ImportError, KeyError):
        return DEFAULT_ENCODING


def _tiktoken_file_cached(name: str) -> bool:
    """Whether tiktoken would find ``name``'s BPE file without a download (its own cache rule)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    key = hashlib.sha1(_BPE_URL.format(name=name).encode()).hexdigest()
    return os.path.exists(os.path.join(cache_dir, key))


@lru_cache(maxsize=16)
def text_counter(model: str, mode: str = "auto") -> Callable[[str], int]:
    """A function counting the tokens of a text for ``model``.

    ``auto`` uses tiktoken only when the encoding file is already cached (tiktoken downloads it
    otherwise, with no timeout, which would hang a worker without internet); ``tiktoken`` allows
    the download; ``estimate`` always uses :func:`estimate_text_tokens_fallback`.
    """
    if mode != "estimate":
        name = _encoding_name(model)
        if mode == "tiktoken" or _tiktoken_file_cached(name):
            try:
                import tiktoken

                encoding = tiktoken.get_encoding(name)
                return lambda text: len(encoding.encode(text, disallowed_special=()))
            except Exception as exc:  # no file, no network, no tiktoken: fall back, once
                logger.warning("tiktoken encoding %s unavailable (%s); estimating tokens", name, exc)
        else:
            logger.info("tiktoken encoding %s is not cached; estimating text tokens as bytes/3", name)
    return estimate_text_tokens_fallback


def image_tokens(
    width: int, height: int, detail: str = "high", base_tokens: int = 85, tile_tokens: int = 170
) -> int:
    """Tokens OpenAI bills for one image (https://platform.openai.com/docs/guides/vision,
    "Calculating costs"): ``low`` detail is a flat 85 tokens. ``high`` first scales the image to
    fit in 2048 x 2048, then so that its shortest side is 768 px (never upscaling), and bills
    170 tokens per 512 px tile plus 85. ``auto`` is estimated as ``high`` (the upper bound).
    gpt-4o-mini and others use other constants: set ``base_tokens``/``tile_tokens``.
    """
    if detail == "low":
        return base_tokens
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return base_tokens + tile_tokens * tiles


def decode_data_url(url: str) -> bytes | None:
    """The bytes of a ``data:...;base64,`` URL, or None for any other URL."""
    if not url.startswith("data:") or ";base64," not in url[:100]:
        return None
    return base64.b64decode(url.split(",", 1)[1], validate=False)


def image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:  # reads the header only
        return image.size


def image_parts(messages: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every ``image_url`` value in ``messages``, in order."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts.extend(p["image_url"] for p in content if p.get("type") == "image_url")
    return parts


def estimate_prompt_tokens(
    messages: Iterable[Mapping[str, Any]],
    count_text: Callable[[str], int],
    base_tokens: int = 85,
    tile_tokens: int = 170,
    default_detail: str = "high",
) -> int:
    """Prompt tokens of a chat request: message overhead, text, and images by the billing rule."""
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += count_text(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                total += count_text(part.get("text", ""))
            elif part.get("type") == "image_url":
                image = part["image_url"]
                data = decode_data_url(image.get("url", ""))
                # A remote URL's size is unknown here: bill it as the largest 2048 x 768 image.
                w, h = image_size(data) if data is not None else (2048, 768)
                detail = image.get("detail") or default_detail
                total += image_tokens(w, h, detail, base_tokens, tile_tokens)
    return total
