"""Panda-70M's metadata CSV, resolved against a folder of downloaded videos.

The CSV has ``videoID,url,timestamp,caption,matching_score`` (the test and validation splits
lack ``matching_score``). ``timestamp`` is a Python-list string of clip ranges,
``[['0:00:00.000', '0:00:05.005'], ...]``, and ``caption`` / ``matching_score`` hold one entry
per clip. Cells are parsed with ``ast.literal_eval`` (literals only, nothing is evaluated); a file name
built from a cell that lands outside ``root`` (``videoID`` = ``../../etc/passwd``) is rejected.
One row per clip, named ``{videoID}_{i}`` as Panda-70M names its clips. The CSV is listed in
byte-range chunks by parallel tasks (:mod:`operators.sources.chunks`); a ``videoID`` that
appears twice gives the same clip ids twice, which the run's id check rejects as ``duplicate_id``.
"""

from __future__ import annotations

import ast
import csv
import logging
import string
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from operators.base import is_missing
from operators.sources.chunks import DEFAULT_CHUNK_BYTES, byte_chunks, chunk_lines, header_line
from operators.sources.common import make_row, parse_seconds, reject_duplicates
from operators.sources.files import FileResolver
from operators.sources.policy import InputPolicy, UriRules

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("videoID", "timestamp")
MAX_CELL_CHARS = 1_000_000  # a literal this long is not Panda-70M metadata


class Panda70MSource(InputPolicy):
    """Clips of Panda-70M, one row per clip of its metadata CSV."""

    kind: Literal["panda70m"] = Field(description="Source kind.")
    csv: str = Field(description="Panda-70M metadata CSV (e.g. panda70m_training_2m.csv), local or URI.")
    root: str = Field(description="Folder or URI holding the downloaded videos.")
    filename: str = Field(
        default="{videoID}.mp4",
        description="File name under root, a template over the CSV's columns. With `{i}` (the clip index) "
        "each clip is its own, already cut file, e.g. `{videoID}_{i}.mp4`; else clips are cut from the video.",
    )
    min_matching_score: float | None = Field(
        default=None, description="Reject clips whose caption matching_score is below this; None keeps all."
    )
    chunk_bytes: int = Field(
        default=DEFAULT_CHUNK_BYTES, ge=0,
        description="The CSV is listed by parallel tasks, one per chunk of this many bytes (0: one task). "
        "Needs one record per line, as Panda-70M's CSVs have.",
    )


def parse_literal_list(cell: str) -> list[Any]:
    """A Python-list string parsed as a literal; anything else is a ValueError."""
    if len(cell) > MAX_CELL_CHARS:
        raise ValueError(f"cell of {len(cell)} characters")
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise ValueError(f"not a list literal: {cell[:200]!r}") from e
    if not isinstance(value, list | tuple):
        raise ValueError(f"not a list: {cell[:200]!r}")
    return list(value)


def parse_clip_ranges(cell: str) -> list[tuple[float, float]]:
    spans = []
    for item in parse_literal_list(cell):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValueError(f"clip range is not a [start, end] pair: {item!r}")
        start, end = parse_seconds(item[0]), parse_seconds(item[1])
        if end <= start:
            raise ValueError(f"clip range ends before it starts: {item!r}")
        spans.append((start, end))
    return spans


def _optional_list(cell: str | None, video_id: str, column: str) -> list[Any]:
    if is_missing(cell):
        return []
    try:
        return parse_literal_list(cell)
    except ValueError as e:
        logger.warning("panda70m %s: ignoring unreadable %s: %s", video_id, column, e)
        return []


def _video_rows(
    record: dict[str, str], config: Panda70MSource, files: FileResolver, rules: UriRules
) -> Iterator[dict[str, Any]]:
    video_id = (record.get("videoID") or "").strip()
    try:
        spans = parse_clip_ranges(record.get("timestamp") or "")
    except ValueError as e:
        yield make_row(
            video_id, "panda70m", "", reject_reason="bad_metadata", reject_detail=f"timestamp: {e}"
        )
        return
    captions = _optional_list(record.get("caption"), video_id, "caption")
    scores = _optional_list(record.get("matching_score"), video_id, "matching_score")
    per_clip_files = "i" in template_fields(config.filename)
    fields = {k: v for k, v in record.items() if isinstance(k, str)}
    resolved: dict[str, tuple[str, bool, tuple[str, str] | None]] = {}
    for i, (start, end) in enumerate(spans):
        name = config.filename.format(**fields, i=i)
        if name not in resolved:
            verdict = rules.verdict(files.uri(name))  # judged before the storage is asked
            resolved[name] = (files.uri(name), False, verdict) if verdict else (*files.resolve(name), None)
        uri, exists, verdict = resolved[name]
        caption = captions[i] if i < len(captions) and isinstance(captions[i], str) else None
        score = scores[i] if i < len(scores) else None
        if verdict is not None:
            reason, detail = verdict
        elif not exists:
            reason, detail = "missing_file", f"video not downloaded: {uri}"
        elif _below(score, config.min_matching_score):
            reason, detail = "low_matching_score", f"matching_score {score:.4f} < {config.min_matching_score}"
        else:
            reason = detail = None
        bounds = (None, None) if per_clip_files else (start, end)
        yield make_row(f"{video_id}_{i}", "panda70m", uri, *bounds, caption, reason, detail)


def _below(score: Any, minimum: float | None) -> bool:
    return minimum is not None and isinstance(score, int | float) and score < minimum


def template_fields(template: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def _fieldnames(config: Panda70MSource) -> list[str]:
    """The CSV's columns, checked against what the source needs."""
    fieldnames = next(csv.reader([header_line(config.csv)]), [])
    missing = [c for c in REQUIRED_COLUMNS if c not in fieldnames]
    if missing:
        raise ValueError(f"Panda-70M CSV {config.csv!r} lacks column(s) {missing} (has {fieldnames})")
    unknown = template_fields(config.filename) - {*fieldnames, "i"}
    if unknown:
        raise ValueError(f"input.filename {config.filename!r} names unknown field(s) {sorted(unknown)}")
    return fieldnames


def partitions(config: Panda70MSource) -> list[dict[str, Any]]:
    """Byte-range chunks of the CSV; the header is checked here, once, so a bad CSV fails fast."""
    _fieldnames(config)
    return [{"start": s, "end": e} for s, e in byte_chunks(config.csv, config.chunk_bytes)]


def list_partition(config: Panda70MSource, part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The clips of the CSV records that start in one chunk."""
    fieldnames = _fieldnames(config)
    files = FileResolver(config.root)
    rules = config.rules([config.root])
    first_chunk = part["start"] == 0
    for number, (offset, line) in enumerate(
        chunk_lines(config.csv, part["start"], part["end"], skip_header=True), start=2
    ):
        if not line.strip():
            continue
        values = next(csv.reader([line]), [])
        record = dict(zip(fieldnames, values, strict=False))
        video_id = (record.get("videoID") or "").strip()
        if not video_id:
            # Line numbers are known in the first chunk; later chunks name the byte offset.
            where = f"line {number}" if first_chunk else f"byte {offset}"
            yield make_row(
                f"panda70m_{where.replace(' ', '_')}", "panda70m", "",
                reject_reason="bad_metadata", reject_detail=f"{where}: empty videoID",
            )  # fmt: skip
            continue
        yield from _video_rows(record, config, files, rules)


def list_rows(config: Panda70MSource) -> Iterator[dict[str, Any]]:
    """One row per clip of every video in the CSV, chunk by chunk (a repeated id rejected)."""
    rows = (row for part in partitions(config) for row in list_partition(config, part))
    return reject_duplicates(rows)


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = Panda70MSource
