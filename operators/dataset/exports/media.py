"""Which video file belongs to an exported row, and under which name it goes in an export.

A row that is a span of a longer file is exported with its clip file (``clip_path``, cut by
the ``clip_files`` stage), never with the long source: its captions describe the span only. A
span without a clip file (``writer.clips: none``) cannot be exported by a format that carries
videos; it is left out and counted. A row that is a whole file is exported with that file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Any

from operators.base import is_missing
from operators.dataset import schema as col
from operators.io import join
from operators.video.clips import is_span

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
NO_CLIP_HINT = ("rows that are spans of a longer video have no clip file (writer.clips: none); "
                "rerun with writer.clips=reencode or copy to export them")


def video_source(output: str, row: dict[str, Any]) -> str | None:
    """The URI of the row's video file, or None for a span without a clip file."""
    clip = row.get(col.CLIP_PATH)
    if not is_missing(clip):
        return join(output, str(clip))
    if is_span(row.get(col.CLIP_START), row.get(col.CLIP_END), row.get(col.FILE_DURATION)):
        return None
    return str(row[col.URI])


#: Folder of the video files in the exports that copy them next to their records (hf, llava).
VIDEO_DIR = "videos"


def copy_video(dest: Any, row: dict[str, Any], uri: str) -> str:
    """Copy the row's video into ``dest`` as ``videos/<id><ext>``; returns that relative path."""
    video = f"{VIDEO_DIR}/{file_stem(str(row[col.VIDEO_ID]))}{extension(uri)}"
    dest.add_file(uri, video)
    return video


def file_stem(video_id: str) -> str:
    """A file name stem for ``video_id``: safe characters only, unique (a short hash of the id
    whenever characters had to be replaced)."""
    safe = _UNSAFE.sub("_", video_id).strip("._") or "video"
    if safe != video_id or len(safe) > 100:
        safe = f"{safe[:100]}-{hashlib.sha1(video_id.encode()).hexdigest()[:10]}"
    return safe


def extension(uri: str) -> str:
    """The video file's extension (``.mp4`` when it has none); tar members keep theirs."""
    name = uri.split("::", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    ext = os.path.splitext(name)[1].lower()
    return ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else ".mp4"


def clip_file_offset(row: dict[str, Any]) -> float:
    """Seconds between the clip file's start and the row's ``clip_start`` (0 unless the clip
    was stream-copied from an earlier keyframe): add it to a keyframe timestamp to find that
    keyframe in the file."""
    start, file_start = row.get(col.CLIP_START), row.get(col.CLIP_FILE_START)
    if is_missing(start) or is_missing(file_start) or is_missing(row.get(col.CLIP_PATH)):
        return 0.0
    return round(float(start) - float(file_start), 6)


def clip_duration(row: dict[str, Any]) -> float | None:
    """Seconds of video in the exported file."""
    duration = row.get(col.DURATION)
    if is_missing(duration):
        return None
    return round(float(duration) + clip_file_offset(row), 6)
