"""A manifest file (CSV, JSONL or Parquet) listing videos by ``uri``.

Optional columns: ``video_id``, ``start`` and ``end`` (seconds or ``H:MM:SS.fff``), ``caption``.
Manifests are data: cells are parsed, never evaluated, and a ``uri`` outside the input roots or
with a scheme not allowed (``operators.sources.policy``) is rejected, never opened. Files are
read as streams, so a manifest of millions of rows does not need to fit in memory.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from operators.base import is_missing
from operators.io import is_local, join, local_path, open_binary
from operators.sources.chunks import DEFAULT_CHUNK_BYTES, byte_chunks, chunk_lines, header_line
from operators.sources.common import (
    as_caption,
    clip_id,
    make_row,
    parse_seconds,
    reject_duplicates,
    relative_id,
    strip_extension,
)
from operators.sources.policy import InputPolicy, UriRules

logger = logging.getLogger(__name__)

URI_COLUMN = "uri"
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class ManifestSource(InputPolicy):
    """Videos listed in a CSV, JSONL or Parquet file with a `uri` column."""

    kind: Literal["manifest"] = Field(description="Source kind.")
    path: str = Field(description="The manifest file, local or any fsspec URI.")
    root: str | None = Field(
        default=None,
        description="Directory or URI that relative uris are resolved against; default: the manifest's folder.",
    )
    format: Literal["csv", "jsonl", "parquet"] | None = Field(
        default=None, description="File format; default: from the extension (.csv, .jsonl/.ndjson, .parquet)."
    )
    chunk_bytes: int | None = Field(
        default=None, ge=0,
        description="Parallel listing: one task per chunk of this many bytes of a CSV or JSONL file "
        "(a Parquet file: one task per row group). None: 64 MiB for JSONL, one task for a CSV (whose "
        "quoted cells may hold newlines); set it for a CSV with one record per line. 0: one task.",
    )


def manifest_format(config: ManifestSource) -> str:
    if config.format:
        return config.format
    name = config.path.lower()
    for ext, fmt in _FORMATS.items():
        if name.endswith(ext):
            return fmt
    raise ValueError(
        f"input.format: cannot tell the format of manifest {config.path!r}; set csv, jsonl or parquet"
    )


def _records(config: ManifestSource, fmt: str) -> Iterator[dict[str, Any]]:
    with open_binary(config.path) as raw:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(raw)
            _require_uri(config.path, parquet.schema_arrow.names)
            for batch in parquet.iter_batches():
                yield from batch.to_pylist()
            return
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        if fmt == "csv":
            reader = csv.DictReader(text)
            _require_uri(config.path, reader.fieldnames or [])
            yield from reader
            return
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                record = {"__error__": f"line {number}: invalid JSON ({e})"}
            if not isinstance(record, dict):
                record = {"__error__": f"line {number}: not a JSON object"}
            if number == 1 and "__error__" not in record:
                _require_uri(config.path, list(record))
            yield record


def _require_uri(path: str, columns: list[str]) -> None:
    if URI_COLUMN not in columns:
        raise ValueError(
            f"manifest {path!r} has no {URI_COLUMN!r} column (columns: {', '.join(map(str, columns))})"
        )


def _resolve(uri: str, root: str) -> tuple[str, str]:
    """The full uri, and the id base: the path relative to root, or the file's stem."""
    if "://" in uri and not uri.startswith("file://"):
        return uri, relative_id(uri, root)
    path = local_path(uri)
    if os.path.isabs(path):
        return path, relative_id(path, os.path.abspath(local_path(root)) if is_local(root) else root)
    if is_local(root):
        return os.path.abspath(os.path.join(local_path(root), path)), strip_extension(path)
    return join(root, path), strip_extension(path)


def _row(record: dict[str, Any], number: int | str, root: str, rules: UriRules) -> dict[str, Any]:
    """One row; ``number`` is the record's row number, or its place (``byte N``) in a chunk."""
    where = f"row {number}" if isinstance(number, int) else str(number)
    if "__error__" in record or is_missing(record.get(URI_COLUMN)):
        detail = record.get("__error__") or f"{where}: empty {URI_COLUMN!r}"
        label = f"row_{number}" if isinstance(number, int) else where.replace(" ", "_")
        return make_row(
            f"manifest_{label}", "manifest", "", reject_reason="bad_metadata", reject_detail=detail
        )
    uri, base = _resolve(str(record[URI_COLUMN]).strip(), root)
    if not is_missing(record.get("video_id")):
        base = str(record["video_id"]).strip()
    caption = None if is_missing(record.get("caption")) else as_caption(str(record["caption"]))
    try:
        start = None if is_missing(record.get("start")) else parse_seconds(record["start"])
        end = None if is_missing(record.get("end")) else parse_seconds(record["end"])
        if start is not None and end is not None and end <= start:
            raise ValueError(f"end {end} is not after start {start}")
    except ValueError as e:
        return make_row(
            base, "manifest", uri, reject_reason="bad_metadata", reject_detail=f"{where}: {e}"
        )
    video_id = base if not is_missing(record.get("video_id")) else clip_id(base, start, end)
    verdict = rules.verdict(uri)
    if verdict is not None:
        return make_row(video_id, "manifest", uri, start, end, caption, *verdict)
    return make_row(video_id, "manifest", uri, start, end, caption)


def _chunk_records(config: ManifestSource, fmt: str, start: int, end: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(place, record)`` of the lines starting in one byte range; place = ``byte N``."""
    lines = chunk_lines(config.path, start, end, skip_header=fmt == "csv")
    if fmt == "csv":
        fieldnames = next(csv.reader([header_line(config.path)]), [])
        for offset, line in lines:
            if line.strip():
                yield f"byte {offset}", dict(zip(fieldnames, next(csv.reader([line])), strict=False))
        return
    for offset, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            record = {"__error__": f"byte {offset}: invalid JSON ({e})"}
        if not isinstance(record, dict):
            record = {"__error__": f"byte {offset}: not a JSON object"}
        yield f"byte {offset}", record


def partitions(config: ManifestSource) -> list[dict[str, Any]]:
    """The listing tasks of the manifest: byte ranges, row groups, or the whole file as one."""
    fmt = manifest_format(config)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with open_binary(config.path) as raw:
            meta = pq.ParquetFile(raw).metadata
            _require_uri(config.path, pq.ParquetFile(raw).schema_arrow.names)
        firsts = [sum(meta.row_group(k).num_rows for k in range(i)) for i in range(meta.num_row_groups)]
        return [{"row_group": i, "first": first + 1} for i, first in enumerate(firsts)] or [{}]
    if fmt == "csv":
        _require_uri(config.path, next(csv.reader([header_line(config.path)]), []))
    chunk = config.chunk_bytes if config.chunk_bytes is not None else (DEFAULT_CHUNK_BYTES if fmt == "jsonl" else 0)
    chunks = byte_chunks(config.path, chunk)
    return [{}] if len(chunks) == 1 else [{"start": s, "end": e} for s, e in chunks]


def list_partition(config: ManifestSource, part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of one listing task. A whole file is read as one stream (row numbers in ids of
    bad rows); a byte range names bad rows by byte offset, a row group by row number."""
    fmt = manifest_format(config)
    folder = config.path.rsplit("/", 1)[0] if "/" in config.path else "."
    root = config.root or folder
    rules = config.rules([folder, config.root])
    if "row_group" in part:
        import pyarrow.parquet as pq

        with open_binary(config.path) as raw:
            records = pq.ParquetFile(raw).read_row_group(part["row_group"]).to_pylist()
        return (_row(r, n, root, rules) for n, r in enumerate(records, start=part["first"]))
    if "start" in part:
        return (_row(r, place, root, rules) for place, r in _chunk_records(config, fmt, part["start"], part["end"]))
    return (_row(record, n, root, rules) for n, record in enumerate(_records(config, fmt), start=1))


def list_rows(config: ManifestSource) -> Iterator[dict[str, Any]]:
    """One row per manifest record, in file order."""
    rows = (row for part in partitions(config) for row in list_partition(config, part))
    return reject_duplicates(rows)


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = ManifestSource
