"""What every source shares: the row shape, ids and time parsing."""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from operators.base import Batch, object_column
from operators.config import StrictModel

logger = logging.getLogger(__name__)

SOURCE_STAGE = "source"

#: The columns of every row a source yields, in order.
ROW_COLUMNS: tuple[str, ...] = (
    "video_id",
    "source",
    "uri",
    "clip_start",
    "clip_end",
    "source_caption",
    "reject_stage",
    "reject_reason",
    "reject_detail",
)

#: Extensions a folder source takes as videos. Some also hold audio only (``.ogg``, ``.asf``,
#: ``.rm``): such a file is rejected by the probe as ``no_video_stream``, never silently left out.
DEFAULT_VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp",
    ".3g2", ".ogv", ".ogg", ".ogm", ".mts", ".m2ts", ".m2t", ".vob", ".mxf", ".divx", ".y4m",
    ".f4v", ".asf", ".dv", ".m2v", ".qt", ".rm", ".rmvb",
)  # fmt: skip


class SourceBase(StrictModel):
    """What every source's config has."""

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Put before this source's ids (`{name}/{id}`), so that sources holding the same "
        "file names give distinct ids and keyframe folders. Default: no prefix when the run has one "
        "source of this kind, `{kind}{k}` for the k-th (from 0) of several sources of one kind. Set it "
        "before adding a second source of the same kind to a run you will resume, so the ids stay.",
    )


def normalize_extensions(values: list[str]) -> list[str]:
    """Lower-case extensions with a leading dot, so ``MP4`` and ``.mp4`` mean the same."""
    return [v.lower() if v.startswith(".") else f".{v.lower()}" for v in values]


def make_row(
    video_id: str,
    source: str,
    uri: str,
    clip_start: float | None = None,
    clip_end: float | None = None,
    source_caption: str | None = None,
    reject_reason: str | None = None,
    reject_detail: str | None = None,
) -> dict[str, Any]:
    """One source row; a ``reject_reason`` marks it rejected by the ``source`` stage."""
    return {
        "video_id": video_id,
        "source": source,
        "uri": uri,
        "clip_start": clip_start,
        "clip_end": clip_end,
        "source_caption": source_caption,
        "reject_stage": SOURCE_STAGE if reject_reason else None,
        "reject_reason": reject_reason,
        "reject_detail": reject_detail if reject_reason else None,
    }


class SourceListing(Iterator[dict[str, Any]]):
    """A source's rows, plus the files its listing left out for their extension (counts per
    extension, a few dozen keys at most), for the run summary."""

    def __init__(self, rows: Iterable[dict[str, Any]], skipped_by_extension: Counter | None = None) -> None:
        self._rows = iter(rows)
        self.skipped_by_extension: Counter = skipped_by_extension if skipped_by_extension is not None else Counter()

    def __next__(self) -> dict[str, Any]:
        return next(self._rows)


def rows_to_batch(rows: Sequence[dict[str, Any]]) -> Batch:
    """Source rows as a batch of object columns."""
    return {column: object_column([row[column] for row in rows]) for column in ROW_COLUMNS}


def reject_duplicates(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Keep the first row of each ``video_id``; later ones come out rejected as ``duplicate_id``."""
    seen: set[str] = set()
    for row in rows:
        video_id = row["video_id"]
        if video_id in seen and not row["reject_reason"]:
            detail = f"video_id {video_id!r} already taken by an earlier row of this source"
            row = {
                **row,
                "reject_stage": SOURCE_STAGE,
                "reject_reason": "duplicate_id",
                "reject_detail": detail,
            }
        seen.add(video_id)
        yield row


_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


def parse_seconds(value: Any) -> float:
    """Seconds from a number, a numeric string, or a clock string ``H:MM:SS.fff`` / ``MM:SS``."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _CLOCK.match(text)
        if match:
            hours, minutes, secs = match.groups()
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
        else:
            seconds = float(text)
    else:
        raise ValueError(f"not a time: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a time: {value!r}")
    return round(seconds, 6)


def seconds_label(seconds: float) -> str:
    """A short, stable label for a time in ids: ``5.005``, ``60``."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def clip_id(base: str, start: float | None, end: float | None) -> str:
    """The id of a clip of ``base``: ``{base}_{start}-{end}``; ``base`` itself for a whole file."""
    if start is None and end is None:
        return base
    lo = seconds_label(start) if start is not None else ""
    hi = seconds_label(end) if end is not None else ""
    return f"{base}_{lo}-{hi}"


def file_ids(paths: Sequence[str], root: str) -> list[str]:
    """Ids of files under ``root``: the relative path without extension, unless two files of
    the list share it (``x.mp4`` and ``x.avi``): those keep their extension, so both are kept.
    Stable as long as the files are; callers pass whole folders, where such pairs live."""
    stems = [relative_id(p, root) for p in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [
        stem if counts[stem] == 1 else f"{stem}{path[path.rfind('.'):]}" if "." in path.rsplit("/", 1)[-1]
        else stem
        for stem, path in zip(stems, paths, strict=True)
    ]


def strip_extension(path: str) -> str:
    head, _, name = path.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{head}/{stem}" if head else stem


def relative_id(path: str, root: str) -> str:
    """``path`` relative to ``root``, without its extension (the basename's stem if not under root)."""
    root = root.rstrip("/")
    if root and path.startswith(root + "/"):
        return strip_extension(path[len(root) + 1 :])
    return strip_extension(path.rsplit("/", 1)[-1])


def as_caption(value: Any) -> str | None:
    """A caption cell as text: strings as they are, a one-element list as its element."""
    if isinstance(value, list | tuple | np.ndarray) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
