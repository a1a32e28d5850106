"""What an earlier run on the same output already finished, so a rerun carries on from there.

A video is done when it is in ``dataset/`` or in ``rejected/`` for a reason a rerun cannot
change. Rejections a rerun may fix (a budget cap reached, retries exhausted) are tried again.
Only complete files count: the writer renames a file into place once it is whole.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq

from operators.io import filesystem, join

logger = logging.getLogger(__name__)

#: Rejection reasons that a later run may overturn; those videos are processed again.
RETRYABLE_REASONS = frozenset({"budget", "retries_exhausted", "rate_limited", "api_unavailable"})


def _parquet_files(output: str, folder: str) -> tuple[object, list[str]]:
    fs, root = filesystem(join(output, folder))
    if not fs.exists(root):
        return fs, []
    return fs, sorted(p for p in fs.ls(root, detail=False)
                      if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(".tmp-"))


def read_column_values(output: str, folder: str, columns: list[str]) -> list[dict]:
    """Rows of ``columns`` from every complete Parquet file under ``output/folder``. A file
    written before a stage existed contributes the columns it has."""
    fs, files = _parquet_files(output, folder)
    rows: list[dict] = []
    for path in files:
        with fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            rows.extend(parquet.read(columns=present).to_pylist())
    return rows


def completed_video_ids(output: str) -> set[str]:
    done = {r["video_id"] for r in read_column_values(output, "dataset", ["video_id"])}
    for row in read_column_values(output, "rejected", ["video_id", "reason"]):
        if row["reason"] not in RETRYABLE_REASONS:
            done.add(row["video_id"])
    return done


def dedup_resume_state(output: str):  # -> operators.dedup.operator.ResumeState | None
    """The dedup pool of an earlier run on ``output``: its kept rows' caption embeddings, and
    the rank to continue from, so a rerun decides as if it had never stopped."""
    from operators.dedup.operator import ResumeState

    kept = [r for r in read_column_values(output, "dataset", ["video_id", "text_embedding", "dedup_rank"])
            if r.get("text_embedding") is not None]
    ranks = [r["dedup_rank"] for r in kept if r.get("dedup_rank") is not None]
    ranks += [r["dedup_rank"] for r in read_column_values(output, "rejected", ["dedup_rank"])
              if r.get("dedup_rank") is not None]
    if not kept and not ranks:
        return None
    kept.sort(key=lambda r: r["dedup_rank"] if r.get("dedup_rank") is not None else -1)
    vectors = np.array([r["text_embedding"] for r in kept], dtype=np.float32).reshape(len(kept), -1)
    return ResumeState(ids=[r["video_id"] for r in kept], vectors=vectors,
                       next_rank=max(ranks) + 1 if ranks else 0)
