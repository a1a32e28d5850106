"""Ego4D videos from its ``ego4d.json`` metadata, optionally cut into fixed windows.

``ego4d.json`` holds a top-level ``videos`` list; each video has a ``video_uid`` and a
``duration_sec`` (also under ``video_metadata.video_duration_sec``). The Ego4D CLI downloads
them as ``{video_uid}.mp4`` (e.g. under ``v2/full_scale/``). Ego4D videos run from minutes to
hours, so a ``window_s`` cuts each into clips short enough for the duration filter.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from operators.io import open_binary
from operators.sources.common import clip_id, make_row, parse_seconds, reject_duplicates
from operators.sources.files import FileResolver
from operators.sources.policy import InputPolicy, UriRules

logger = logging.getLogger(__name__)


class Ego4DSource(InputPolicy):
    """Ego4D videos listed in ego4d.json, whole or cut into windows."""

    kind: Literal["ego4d"] = Field(description="Source kind.")
    metadata: str = Field(description="Path or URI of ego4d.json.")
    root: str = Field(description="Folder or URI holding the video files (e.g. .../v2/full_scale).")
    filename: str = Field(
        default="{video_uid}.mp4", description="File name under root; `{video_uid}` is replaced."
    )
    window_s: float | None = Field(
        default=None,
        ge=1.0,
        description="Cut each video into windows of this many seconds; None = whole video.",
    )
    min_window_s: float = Field(
        default=1.0, ge=0.0, description="A last, partial window shorter than this is left out."
    )
    max_windows_per_video: int | None = Field(
        default=None, ge=1, description="Keep at most this many windows per video, spread evenly over it."
    )


def windows(
    duration: float, window_s: float, min_window_s: float, limit: int | None
) -> list[tuple[float, float]]:
    """``[start, end)`` windows covering ``duration``; a short tail below ``min_window_s`` is dropped."""
    count = max(1, math.ceil(duration / window_s - 1e-9))
    spans = [(round(k * window_s, 6), round(min((k + 1) * window_s, duration), 6)) for k in range(count)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_window_s:
        spans.pop()
    if limit is not None and len(spans) > limit:
        # Evenly spread picks see more of a long video than its first minutes.
        step = (len(spans) - 1) / (limit - 1) if limit > 1 else 0
        spans = [spans[round(k * step)] for k in range(limit)]
    return spans


def _duration(video: dict[str, Any]) -> float | None:
    for value in (video.get("duration_sec"), (video.get("video_metadata") or {}).get("video_duration_sec")):
        if value is None:
            continue
        try:
            return parse_seconds(value)
        except ValueError:
            continue
    return None


def load_videos(metadata: str) -> list[Any]:
    with open_binary(metadata) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise ValueError(f"Ego4D metadata {metadata!r} has no top-level 'videos' list")
    return data["videos"]


def _video_rows(
    video: Any, number: int, config: Ego4DSource, files: FileResolver, rules: UriRules
) -> Iterator[dict[str, Any]]:
    uid = video.get("video_uid") if isinstance(video, dict) else None
    if not isinstance(uid, str) or not uid:
        detail = f"videos[{number}] has no video_uid"
        yield make_row(
            f"ego4d_video_{number}", "ego4d", "", reject_reason="bad_metadata", reject_detail=detail
        )
        return
    name = config.filename.format(video_uid=uid)
    verdict = rules.verdict(files.uri(name))  # a uid of '../../x' must not name a file elsewhere
    if verdict is not None:
        yield make_row(uid, "ego4d", files.uri(name), None, None, None, *verdict)
        return
    uri, exists = files.resolve(name)
    if not exists:
        yield make_row(
            uid, "ego4d", uri, reject_reason="missing_file", reject_detail=f"no file for {uid}: {uri}"
        )
        return
    duration = _duration(video)
    if config.window_s is None or duration is None:
        if config.window_s is not None:
            logger.warning("ego4d %s: no duration_sec, listed whole", uid)
        yield make_row(uid, "ego4d", uri)
        return
    for start, end in windows(duration, config.window_s, config.min_window_s, config.max_windows_per_video):
        yield make_row(clip_id(uid, start, end), "ego4d", uri, start, end)


def list_rows(config: Ego4DSource) -> Iterator[dict[str, Any]]:
    """One row per video, or per window with ``window_s``; ids are ``{video_uid}[_{start}-{end}]``."""
    files = FileResolver(config.root)
    rules = config.rules([config.root])
    videos = load_videos(config.metadata)
    logger.info("ego4d source %s: %d videos", config.metadata, len(videos))
    rows = (row for number, video in enumerate(videos) for row in _video_rows(video, number, config, files, rules))
    return reject_duplicates(rows)


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = Ego4DSource
