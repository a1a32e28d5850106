"""The last stage: kept rows to ``dataset/``, rejected rows to ``rejected/``, as Parquet.

Files are sized for object stores: the adapter gathers ``rows_per_file`` rows per call (the
stage's ``batch_size``), and a call writes one file per folder unless its rows exceed
``bytes_per_file``, when they are cut into files under that size. Each file is written under a
temporary name and renamed, so a killed run never leaves a half-written file behind for a rerun
to trust. A file is named after the ids it holds, so a batch written twice (a task Ray retries
after its worker died between the write and the reply) replaces its own file instead of adding a
second copy. The stage returns one small summary row per input row (its id and fate) for the
run's ``stats.json``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from operators.base import REJECT_COLUMNS, Batch, Operator, Resources, live_mask, object_column
from operators.config import StrictModel
from operators.dataset.schema import (
    DATASET_DIR,
    DATASET_SCHEMA,
    REJECT_COLUMN_ON_DISK,
    REJECTED_DIR,
    REJECTED_SCHEMA,
    VIDEO_ID,
)
from operators.io import join, write_bytes_atomic

logger = logging.getLogger(__name__)

#: What the writer hands back per input row, for the run's tallies.
SUMMARY_COLUMNS = (VIDEO_ID, "reject_stage", "reject_reason", "usage")


class WriterConfig(StrictModel):
    compression: str = Field("zstd", description="Parquet compression codec.")
    clips: Literal["reencode", "copy", "none"] = Field(
        "reencode",
        description="Clip files for rows that are spans of a longer file (the `clip_files` stage). "
        "'reencode': cut frame-exactly (libx264, audio as AAC). 'copy': stream-copy from the "
        "keyframe at or before the span's start (fast; the real start is recorded as "
        "`clip_file_start`). 'none': no clip files; exports that need a file leave such rows out.")
    clip_crf: int = Field(18, ge=0, le=51, description="libx264 CRF of re-encoded clips (lower = better).")
    clip_preset: str = Field("veryfast", description="libx264 preset of re-encoded clips.")
    rows_per_file: int = Field(
        1000, ge=1,
        description="Rows gathered into one call of the writer, hence the most rows per file in "
        "dataset/ and rejected/. A row counts as done for a rerun only once its file is written, "
        "so a killed run redoes up to this many rows per writer task in flight (their API "
        "answers come from the cache). The writer's batch_size; stages.write.batch_size, if set, wins.")
    bytes_per_file: int = Field(
        64 * 2**20, ge=2**16,
        description="Most bytes of one file's rows, measured in Arrow memory before compression "
        "(the file is smaller): a call whose rows exceed it writes several files.")


def _python_value(value: Any) -> Any:
    """Numpy scalars and arrays to plain Python, so Arrow can cast to the schema's types."""
    if isinstance(value, np.ndarray):
        return [_python_value(v) for v in value] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_python_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _python_value(v) for k, v in value.items()}
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def to_table(columns: dict[str, list[Any]], schema: pa.Schema) -> pa.Table:
    """A table with the schema's columns that are present, cast to the schema's types."""
    fields = [f for f in schema if f.name in columns]
    arrays = [pa.array([_python_value(v) for v in columns[f.name]], type=f.type) for f in fields]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def parquet_bytes(table: pa.Table, compression: str) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue()


class WriteShards(Operator):
    """Writes kept and rejected rows; returns ``video_id``, the ``reject_*`` fate and the file."""

    name: ClassVar[str] = "write"
    input_columns: ClassVar[tuple[str, ...]] = ("video_id", "uri", "source")
    output_columns: ClassVar[tuple[str, ...]] = ("written_to",)
    sees_rejected: ClassVar[bool] = True
    exact_batches: ClassVar[bool] = True

    def __init__(self, config: WriterConfig | None = None, resources: Resources | None = None,
                 *, output: str) -> None:
        super().__init__(config or WriterConfig(), resources)
        self.output = output

    def default_resources(self) -> Resources:
        return Resources(num_cpus=0.5, batch_size=self.config.rows_per_file)

    def keeps(self, column: str) -> bool:
        return (column in DATASET_SCHEMA.names or column in REJECTED_SCHEMA.names
                or column in REJECT_COLUMN_ON_DISK or column in SUMMARY_COLUMNS
                or column.startswith("_t_"))

    def _write_one(self, folder: str, table: pa.Table) -> str:
        ids = "\n".join(str(v) for v in table.column(VIDEO_ID).to_pylist())
        name = f"part-{hashlib.sha256(ids.encode()).hexdigest()[:24]}.parquet"
        relative = f"{folder}/{name}"
        write_bytes_atomic(join(self.output, relative), parquet_bytes(table, self.config.compression))
        return relative

    def _write(self, folder: str, table: pa.Table) -> list[str]:
        """Write ``table`` as files within the size limits; each row's file, in order."""
        rows = min(self.config.rows_per_file, _rows_within(table, self.config.bytes_per_file))
        written: list[str] = []
        for start in range(0, table.num_rows, rows):
            part = table.slice(start, rows)
            written.extend([self._write_one(folder, part)] * part.num_rows)
        return written

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch[VIDEO_ID])
        if len(set(batch[VIDEO_ID].tolist())) != n:
            # Resume and the listing's id check give every row its own id; two in one batch
            # would be written twice (here, or once kept and once rejected): a bug, not data.
            seen: set = set()
            twice = sorted({str(v) for v in batch[VIDEO_ID] if v in seen or seen.add(v)})
            raise RuntimeError(f"writer: video_id(s) {twice[:5]} twice in one batch")
        kept = live_mask(batch)
        written = [""] * n
        if kept.any():
            idx = np.flatnonzero(kept)
            columns = {k: [batch[k][i] for i in idx] for k in batch if k in DATASET_SCHEMA.names}
            for i, path in zip(idx, self._write(DATASET_DIR, to_table(columns, DATASET_SCHEMA)), strict=True):
                written[i] = path
        if (~kept).any():
            idx = np.flatnonzero(~kept)
            renamed = REJECT_COLUMN_ON_DISK
            columns = {renamed.get(k, k): [batch[k][i] for i in idx]
                       for k in batch if renamed.get(k, k) in REJECTED_SCHEMA.names}
            for i, path in zip(idx, self._write(REJECTED_DIR, to_table(columns, REJECTED_SCHEMA)), strict=True):
                written[i] = path
        out: Batch = {k: batch[k] for k in batch if k in SUMMARY_COLUMNS or k.startswith("_t_")}
        for column in REJECT_COLUMNS[:2]:
            out.setdefault(column, object_column([None] * n))
        out["written_to"] = object_column(written)
        return out


def _rows_within(table: pa.Table, max_bytes: int) -> int:
    """Rows per file so that a file's rows stay under ``max_bytes`` (rows of one batch are
    close in size: the same columns, captions of similar length)."""
    if table.num_rows == 0 or table.nbytes <= max_bytes:
        return max(1, table.num_rows)
    return max(1, int(table.num_rows * max_bytes / table.nbytes))
