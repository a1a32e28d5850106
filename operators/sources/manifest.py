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


def _row(record: dict[str, Any], number: int, root: str, rules: UriRules) -> dict[str, Any]:
    if "__error__" in record or is_missing(record.get(URI_COLUMN)):
        detail = record.get("__error__") or f"row {number}: empty {URI_COLUMN!r}"
        return make_row(
            f"manifest_row_{number}", "manifest", "", reject_reason="bad_metadata", reject_detail=detail
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
            base, "manifest", uri, reject_reason="bad_metadata", reject_detail=f"row {number}: {e}"
        )
    video_id = base if not is_missing(record.get("video_id")) else clip_id(base, start, end)
    verdict = rules.verdict(uri)
    if verdict is not None:
        return make_row(video_id, "manifest", uri, start, end, caption, *verdict)
    return make_row(video_id, "manifest", uri, start, end, caption)


def list_rows(config: ManifestSource) -> Iterator[dict[str, Any]]:
    """One row per manifest record, in file order."""
    fmt = manifest_format(config)
    folder = config.path.rsplit("/", 1)[0] if "/" in config.path else "."
    root = config.root or folder
    rules = config.rules([folder, config.root])
    rows = (_row(record, n, root, rules) for n, record in enumerate(_records(config, fmt), start=1))
    return reject_duplicates(rows)


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = ManifestSource
