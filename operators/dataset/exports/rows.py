"""Reading a finished output for an export: file by file, batch by batch, never all rows.

Rows come in a reproducible order (files sorted by name, rows in file order) without a global
sort, which would need every row in memory. Only videos with a summary are exported: a video
the API stage has not captioned (yet) has nothing to train on; how many were left out is said.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from operators.base import is_missing
from operators.dataset import schema as col
from operators.io import filesystem, join

logger = logging.getLogger(__name__)

#: Rows per Arrow batch read from a dataset file; bounds an export's memory.
READ_BATCH_ROWS = 512


class ExportError(ValueError):
    """An export that cannot be made as asked (no such output, nothing captioned, a destination
    holding something else); the message is one line a user can act on."""


@dataclass
class Tally:
    """What an export saw: rows exported, and rows left out with why."""

    exported: int = 0
    uncaptioned: int = 0
    no_clip_file: int = 0


def dataset_files(output: str) -> tuple[Any, list[str]]:
    """The filesystem and complete Parquet files of ``output/dataset``, sorted."""
    out_fs, out_root = filesystem(output)
    if not out_fs.exists(out_root):
        raise ExportError(f"{output}: no such output folder")
    fs, root = filesystem(join(output, col.DATASET_DIR))
    if not fs.exists(root):
        raise ExportError(f"{output}: no dataset/ folder, not the output of a run")
    files = sorted(p for p in fs.ls(root, detail=False)
                   if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(".tmp-"))
    return fs, files


def check_captioned(output: str) -> int:
    """The number of captioned rows, read from the ``summary`` column alone; an
    :class:`ExportError` when there are none (a run without captions, or not finished)."""
    fs, files = dataset_files(output)
    captioned = total = 0
    for path in files:
        with fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            total += parquet.metadata.num_rows
            if col.SUMMARY not in parquet.schema_arrow.names:
                continue
            for batch in parquet.iter_batches(batch_size=65536, columns=[col.SUMMARY]):
                captioned += batch.num_rows - batch.column(0).null_count
    if not captioned:
        raise ExportError(f"{output}: none of its {total} kept videos has captions (steps.captions "
                          "off, or the run has not reached the API stage): nothing to export")
    return captioned


def captioned_rows(output: str, tally: Tally | None = None) -> Iterator[dict[str, Any]]:
    """Every kept, captioned row of ``output`` (the columns exports read), streamed."""
    tally = tally if tally is not None else Tally()
    fs, files = dataset_files(output)
    for path in files:
        with fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            present = [c for c in col.EXPORT_COLUMNS if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=present):
                for row in batch.to_pylist():
                    if is_missing(row.get(col.SUMMARY)):
                        tally.uncaptioned += 1
                        continue
                    yield row
    if tally.uncaptioned:
        logger.warning("%d kept videos have no summary yet and are not exported", tally.uncaptioned)


def sorted_captions(row: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(row.get(col.CAPTIONS) or [], key=lambda c: c[col.CAPTION_IDX])


def rows_with_video(output: str, tally: Tally) -> Iterator[tuple[dict[str, Any], str]]:
    """``(row, video URI)`` of every captioned row of ``output`` that has a video file to
    export; a span without a clip file is counted in ``tally.no_clip_file`` and left out."""
    from operators.dataset.exports.media import video_source

    for row in captioned_rows(output, tally):
        uri = video_source(output, row)
        if uri is None:
            tally.no_clip_file += 1
            continue
        yield row, uri
