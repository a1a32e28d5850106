"""The last stage: kept rows to ``dataset/``, rejected rows to ``rejected/``, as Parquet.

Each batch becomes at most one file in each folder, written under a temporary name and renamed,
so a killed run never leaves a half-written file behind for a rerun to trust. A file is named
after the ids it holds, so a batch written twice (a task Ray retries after its worker died
between the write and the reply) replaces its own file instead of adding a second copy. The stage
returns one small summary row per input row (its id and fate) for the run's ``stats.json``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from operators.base import REJECT_COLUMNS, Batch, Operator, Resources, live_mask, object_column
from operators.config import StrictModel
from operators.io import join, write_bytes_atomic

logger = logging.getLogger(__name__)

USAGE_TYPE = pa.struct([
    ("calls", pa.int64()), ("cached_calls", pa.int64()), ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()), ("cost_usd", pa.float64()),
])
CAPTION_TYPE = pa.struct([
    ("idx", pa.int64()), ("timestamp", pa.float64()), ("kind", pa.string()), ("text", pa.string()),
    ("finish_reason", pa.string()),
])
SKIPPED_KEYFRAME_TYPE = pa.struct([
    ("idx", pa.int64()), ("timestamp", pa.float64()), ("reason", pa.string()),
])

#: Columns of ``dataset/*.parquet``, in order. Columns a run has no stage for are left out.
DATASET_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("source", pa.string()), ("uri", pa.string()),
    ("clip_start", pa.float64()), ("clip_end", pa.float64()), ("duration", pa.float64()),
    ("file_duration", pa.float64()), ("fps", pa.float64()), ("fps_num", pa.int64()),
    ("fps_den", pa.int64()), ("width", pa.int64()), ("height", pa.int64()),
    ("rotation", pa.int64()), ("codec", pa.string()), ("num_frames", pa.int64()),
    ("size_bytes", pa.int64()), ("source_caption", pa.string()),
    ("frame_timestamps", pa.list_(pa.float64())),
    ("short_caption", pa.string()), ("text_embedding", pa.list_(pa.float32())),
    ("dedup_rank", pa.int64()),
    ("keyframe_indices", pa.list_(pa.int64())), ("keyframe_timestamps", pa.list_(pa.float64())),
    ("keyframe_paths", pa.list_(pa.string())),
    ("captions", pa.list_(CAPTION_TYPE)), ("summary", pa.string()), ("usage", USAGE_TYPE),
    ("skipped_keyframes", pa.list_(SKIPPED_KEYFRAME_TYPE)),
])

REJECTED_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("source", pa.string()), ("uri", pa.string()),
    ("clip_start", pa.float64()), ("clip_end", pa.float64()),
    ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("dedup_rank", pa.int64()), ("usage", USAGE_TYPE),
])

SUMMARY_COLUMNS = ("video_id", "reject_stage", "reject_reason", "usage")


class WriterConfig(StrictModel):
    compression: str = Field("zstd", description="Parquet compression codec.")


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

    def __init__(self, config: WriterConfig | None = None, resources: Resources | None = None,
                 *, output: str) -> None:
        super().__init__(config or WriterConfig(), resources)
        self.output = output

    def default_resources(self) -> Resources:
        return Resources(num_cpus=0.5, batch_size=64)

    def _write(self, folder: str, table: pa.Table) -> str:
        ids = "\n".join(str(v) for v in table.column("video_id").to_pylist())
        name = f"part-{hashlib.sha256(ids.encode()).hexdigest()[:24]}.parquet"
        relative = f"{folder}/{name}"
        write_bytes_atomic(join(self.output, relative), parquet_bytes(table, self.config.compression))
        return relative

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["video_id"])
        kept = live_mask(batch)
        written = [""] * n
        if kept.any():
            idx = np.flatnonzero(kept)
            columns = {k: [batch[k][i] for i in idx] for k in batch if k in DATASET_SCHEMA.names}
            path = self._write("dataset", to_table(columns, DATASET_SCHEMA))
            for i in idx:
                written[i] = path
        if (~kept).any():
            idx = np.flatnonzero(~kept)
            renamed = {"reject_stage": "stage", "reject_reason": "reason", "reject_detail": "detail"}
            columns = {renamed.get(k, k): [batch[k][i] for i in idx]
                       for k in batch if renamed.get(k, k) in REJECTED_SCHEMA.names}
            path = self._write("rejected", to_table(columns, REJECTED_SCHEMA))
            for i in idx:
                written[i] = path
        out: Batch = {k: batch[k] for k in batch if k in SUMMARY_COLUMNS or k.startswith("_t_")}
        for column in REJECT_COLUMNS[:2]:
            out.setdefault(column, object_column([None] * n))
        out["written_to"] = object_column(written)
        return out
