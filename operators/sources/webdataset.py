"""Webdataset tar shards of videos, as video2dataset writes them (the usual Panda-70M download).

A shard holds samples as consecutive members sharing a key: ``00000000.mp4``, ``00000000.json``
(``key``, ``url``, ``status``, ``caption``, and ``clips`` when video2dataset cut the video into
clips, each clip then its own sample keyed ``{key}_{clip}``), ``00000000.txt`` (the caption).
The run lists samples, one listing task per shard (``partitions`` / ``list_partition``): each
reads the shard's member headers once and yields one row per sample whose ``uri`` names the
member and, for an uncompressed shard, its data's place, ``tar://{member}@{offset}+{size}::{shard}``,
so every later read of the sample is one range read, never a scan of the shard. A rerun then
resumes per sample, and a shard whose samples are all done is not opened again. ``list_rows``
(one row per shard) and :class:`ExpandShards` remain for callers that expand shards in a stage. Nothing is extracted to disk. Member names are data: one that
fsspec would read as a URL chain (holding ``::`` or ``://``) is rejected, never opened.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from operators.base import Batch, Operator, Resources
from operators.io import filesystem, member_uri, open_binary
from operators.sources.common import (
    ROW_COLUMNS,
    SourceBase,
    as_caption,
    make_row,
    parse_seconds,
    reject_duplicates,
    relative_id,
    rows_to_batch,
)
from operators.sources.files import expand_braces, has_glob, pattern_root, to_uri

logger = logging.getLogger(__name__)

MAX_META_BYTES = 64 << 20
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's key/extension split


class WebDatasetSource(SourceBase):
    """Samples of webdataset tar shards written by video2dataset."""

    kind: Literal["webdataset"] = Field(description="Source kind.")
    shards: str | list[str] = Field(
        description="Shard URIs: a glob, a brace pattern (`data/{00000..00009}.tar`) or a list of either; "
        "local or any fsspec URI."
    )
    video_ext: str = Field(default="mp4", description="Extension of the video member of a sample.")
    id_field: str = Field(default="key", description="JSON field holding the sample id; else the tar key.")
    clips_are_cut: bool = Field(
        default=True,
        description="video2dataset cut each clip into its own sample (its default): the whole file is the clip. "
        "False: the json's `clips` spans are cut from the file, one row per span.",
    )


def list_rows(config: WebDatasetSource) -> Iterator[dict[str, Any]]:
    """One row per shard (``video_id`` = shard path relative to the pattern's folder); no shard is opened."""
    patterns = [config.shards] if isinstance(config.shards, str) else list(config.shards)
    rows = []
    for pattern in patterns:
        fs, pattern_path = filesystem(pattern)
        root = pattern_root(pattern_path)
        for expanded in expand_braces(pattern_path):
            paths = sorted(fs.glob(expanded)) if has_glob(expanded) else [expanded]
            rows.extend(make_row(relative_id(p, root), config.kind, to_uri(fs, p)) for p in paths)
    if not rows:
        raise ValueError(f"input.shards {config.shards!r} matches no shard")
    logger.info("webdataset source: %d shards", len(rows))
    return reject_duplicates(rows)


POSITIONS = "__positions__"  # parts[POSITIONS][ext] = (data offset, size) of each member


def _samples(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {extension: member name or, for metadata, its bytes}) per run of members sharing a key;
    ``parts[POSITIONS]`` holds each member's data offset and size in the shard."""
    key, parts = None, {}
    for member in tar:
        match = _MEMBER.match(member.name)
        if not member.isfile() or not match:
            continue
        if match.group(1) != key:
            if key is not None:
                yield key, parts
            key, parts = match.group(1), {POSITIONS: {}}
        ext = match.group(2).lower()
        parts[POSITIONS][ext] = (member.offset_data, member.size)
        if ext in ("json", "txt") and member.size <= MAX_META_BYTES:
            parts[ext] = tar.extractfile(member).read()
        else:
            parts[ext] = member.name
    if key is not None:
        yield key, parts


def _sample_rows(
    key: str, parts: dict[str, Any], shard: str, options: WebDatasetSource, ranged: bool = False
) -> list[dict[str, Any]]:
    try:
        meta = json.loads(parts["json"]) if "json" in parts else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("webdataset %s: unreadable json for sample %s", shard, key)
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    video_id = str(meta.get(options.id_field) or key)
    caption = as_caption(meta.get("caption"))
    if caption is None and "txt" in parts:
        caption = as_caption(parts["txt"].decode("utf-8", errors="replace"))
    ext = options.video_ext.lower().lstrip(".")
    member = parts.get(ext)
    if member is None:
        status = f"status={meta.get('status')!r}, error={meta.get('error_message')!r}"
        detail = f"sample {key} of {shard} has no .{options.video_ext} ({status})"
        return [make_row(video_id, "webdataset", shard, None, None, caption, "missing_video", detail)]
    if "::" in member or "://" in member:
        # fsspec reads '::' as a chain link: such a name could point the reader at a URL.
        detail = f"member name {member[:300]!r} of {shard} would be read as a URL chain"
        return [make_row(video_id, "webdataset", shard, None, None, caption, "unsafe_member_name", detail)]
    uri = member_uri(member, shard, *(parts[POSITIONS][ext] if ranged else (None, None)))
    spans = meta.get("clips")
    if options.clips_are_cut or not isinstance(spans, list) or not spans:
        return [make_row(video_id, "webdataset", uri, None, None, caption)]
    spans = [spans] if not isinstance(spans[0], list | tuple) else spans
    rows = []
    for i, span in enumerate(spans):
        sample_id = video_id if len(spans) == 1 else f"{video_id}_{i}"
        try:
            start, end = parse_seconds(span[0]), parse_seconds(span[1])
        except (ValueError, IndexError, TypeError) as e:
            rows.append(
                make_row(sample_id, "webdataset", uri, None, None, caption, "bad_metadata", f"clips: {e}")
            )
            continue
        rows.append(make_row(sample_id, "webdataset", uri, start, end, caption))
    return rows


def is_plain_tar(shard: str) -> bool:
    """An uncompressed tar, whose members' offsets are offsets in the file itself."""
    return shard.lower().endswith(".tar")


def read_shard(shard: str, shard_id: str, options: WebDatasetSource, ranged: bool = False) -> list[dict[str, Any]]:
    """Every sample of one shard as a row; a shard that cannot be read becomes one rejected row.
    ``ranged``: the uris carry each member's place (only for an uncompressed tar)."""
    rows: list[dict[str, Any]] = []
    ranged = ranged and is_plain_tar(shard)
    try:
        # A plain tar is opened seekable: reading the headers skips over the members' data.
        with open_binary(shard) as f, tarfile.open(fileobj=f, mode="r:" if ranged else "r|*") as tar:
            for key, parts in _samples(tar):
                rows.extend(_sample_rows(key, parts, shard, options, ranged))
    except FileNotFoundError as e:
        rows.append(
            make_row(shard_id, "webdataset", shard, reject_reason="missing_file", reject_detail=str(e))
        )
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        logger.warning("webdataset: bad shard %s: %s", shard, e)
        detail = f"{type(e).__name__}: {e} (after {len(rows)} samples)"
        rows.append(make_row(shard_id, "webdataset", shard, reject_reason="bad_shard", reject_detail=detail))
    if not rows:
        rows.append(
            make_row(shard_id, "webdataset", shard, reject_reason="bad_shard", reject_detail="empty shard")
        )
    return list(reject_duplicates(rows))


def partitions(config: WebDatasetSource) -> list[dict[str, Any]]:
    """One listing task per shard."""
    return [{"shard": row["uri"], "shard_id": row["video_id"]} for row in list_rows(config)]


def list_partition(config: WebDatasetSource, part: dict[str, Any]) -> list[dict[str, Any]]:
    """The samples of one shard, with ranged member uris."""
    return read_shard(part["shard"], part["shard_id"], config, ranged=True)


class ExpandShards(Operator):
    """Turns each webdataset shard row into one row per sample of the shard.

    Rows of other sources (and samples already expanded) pass through unchanged, so the stage
    can run on the rows of every source of a job.
    """

    name: ClassVar[str] = "expand_shards"
    input_columns: ClassVar[tuple[str, ...]] = ROW_COLUMNS
    output_columns: ClassVar[tuple[str, ...]] = ROW_COLUMNS
    stateful: ClassVar[bool] = False
    changes_row_count: ClassVar[bool] = True

    def __init__(self, config: WebDatasetSource | None = None, resources: Resources | None = None) -> None:
        super().__init__(config or WebDatasetSource(kind="webdataset", shards=[]), resources)

    def default_resources(self) -> Resources:
        # One shard per task: shards are large, and spreading them is the parallelism.
        return Resources(num_cpus=1.0, batch_size=1)

    def __call__(self, batch: Batch) -> Batch:
        rows: list[dict[str, Any]] = []
        for i in range(len(batch["uri"])):
            row = {column: batch[column][i] if column in batch else None for column in ROW_COLUMNS}
            if row["source"] == "webdataset" and not str(row["uri"]).startswith("tar://"):
                rows.extend(read_shard(str(row["uri"]), str(row["video_id"]), self.config))
            else:
                rows.append(row)
        return rows_to_batch(rows)


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = WebDatasetSource
