"""Options of ``sg4v export``, shared by every format (each reads the ones it has)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

DEFAULT_PROMPT = "Describe this video in detail."


@dataclass(frozen=True)
class ExportOptions:
    #: Remove an export already in ``--dest`` before writing (never anything else).
    overwrite: bool = False
    #: llava: the media token of the first human turn: ``image`` (LLaVA-NeXT, LLaVA-Video,
    #: LLaVA-OneVision) or ``video`` (Video-LLaVA, Video-ChatGPT, VideoLLaMA-style code).
    video_token: Literal["image", "video"] = "image"
    #: llava: one more question/answer turn per keyframe caption.
    keyframe_turns: bool = False
    #: llava: the question of the first turn.
    prompt: str = DEFAULT_PROMPT
    #: webdataset: samples per shard (at most 10000: keys are 5 shard + 4 sample digits).
    shard_size: int = 1000
    #: Keyframe images in the export (webdataset: in the samples; others: under keyframes/).
    keyframes: bool = False
    #: sharegpt4video: largest zip archive in bytes (a clip larger than that gets its own).
    archive_size: int = 2 * 1024**3

    def __post_init__(self) -> None:
        if not 1 <= self.shard_size <= 10_000:
            raise ValueError(f"shard_size must be between 1 and 10000, got {self.shard_size}")
        if self.archive_size < 1:
            raise ValueError(f"archive_size must be positive, got {self.archive_size}")
        if self.video_token not in ("image", "video"):
            raise ValueError(f"video_token must be image or video, got {self.video_token!r}")


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1048576`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size like 500M or 2G")
    return int(float(match.group(1)) * _UNITS[match.group(2)])
