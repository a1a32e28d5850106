"""What an earlier run on the same output already finished, so a rerun carries on from there.

A video is done when it is in ``dataset/`` or in ``rejected/`` for a reason a rerun cannot
change. Rejections a rerun may fix (a budget cap reached, retries exhausted) are tried again:
before the rerun processes them, their rows are taken out of ``rejected/`` (each file rewritten
under its own name, atomically), so a video is never in the output twice, whatever the rerun
decides. Only complete files count: the writer renames a file into place once it is whole, and
every reader lists files through :func:`parquet_files`, which skips temporary names.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.dataset.reader import is_temp_name, parquet_files, read_column_values
from operators.dataset.schema import (
    DATASET_DIR,
    DEDUP_RANK,
    REASON,
    REJECTED_DIR,
    RESULT_DIRS,
    TEXT_EMBEDDING,
    VIDEO_ID,
)
from operators.io import filesystem, join, write_bytes_atomic
from operators.llm.errors import RETRYABLE_REASONS

logger = logging.getLogger(__name__)

@dataclass
class ResumeState:
    """What the files of earlier runs say: videos finished, and videos to try again."""

    done: set[str] = field(default_factory=set)
    retry: set[str] = field(default_factory=set)


def resume_state(output: str) -> ResumeState:
    state = ResumeState(done={r[VIDEO_ID] for r in read_column_values(output, DATASET_DIR, [VIDEO_ID])})
    retryable = set()
    for row in read_column_values(output, REJECTED_DIR, [VIDEO_ID, REASON]):
        if row["reason"] in RETRYABLE_REASONS:
            retryable.add(row[VIDEO_ID])
        else:
            state.done.add(row[VIDEO_ID])
    # A retryable row next to a final decision (left by an older version) is only stale.
    state.retry = retryable - state.done
    return state


def completed_video_ids(output: str) -> set[str]:
    return resume_state(output).done


def drop_rejections(output: str, video_ids: Collection[str]) -> int:
    """Take the rows of ``video_ids`` out of ``rejected/``; the number of rows removed.

    Each affected file is rewritten without them under its own name (temporary name, then a
    rename over the old file), or deleted when nothing is left, so a run killed in the middle
    leaves every file either as it was or as it should be; the next run finishes the job.
    """
    if not video_ids:
        return 0
    from operators.dataset.writer import parquet_bytes

    wanted = sorted(set(video_ids))
    fs, files = parquet_files(output, REJECTED_DIR)
    removed = 0
    for path in files:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        drop = pc.is_in(table.column(VIDEO_ID), value_set=pa.array(wanted, type=pa.string()))
        n = pc.sum(drop).as_py() or 0
        if not n:
            continue
        removed += n
        if n == table.num_rows:
            fs.rm(path)
            continue
        kept = parquet_bytes(table.filter(pc.invert(drop)), _compression_of(fs, path))
        write_bytes_atomic(join(output, REJECTED_DIR, path.rsplit("/", 1)[-1]), kept)
    if removed:
        logger.info("took %d row(s) to retry out of %s", removed, join(output, REJECTED_DIR))
    return removed


def _compression_of(fs, path: str) -> str:
    with fs.open(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
    if meta.num_row_groups and meta.num_columns:
        return meta.row_group(0).column(0).compression.lower()
    return "zstd"


def remove_temp_files(output: str) -> int:
    """Delete temporary files a killed run left in the output's root and result folders.

    Call it only when no other run writes to ``output``. Nothing reads these files (every
    reader skips temporary names); this only gives their space back. The response cache and
    ``keyframes/`` are left alone: they are read by exact name only, and listing a large cache
    on object storage costs more than the stray files it would find.
    """
    removed = 0
    for folder in ("", *RESULT_DIRS):
        fs, root = filesystem(join(output, folder) if folder else output)
        if not fs.exists(root):
            continue
        for path in fs.ls(root, detail=False):
            if is_temp_name(path) and fs.isfile(path):
                fs.rm(path)
                removed += 1
    if removed:
        logger.info("removed %d temporary file(s) a killed run left in %s", removed, output)
    return removed


def dedup_resume_state(output: str):  # -> operators.dedup.operator.ResumeState | None
    """The dedup pool of an earlier run on ``output``: its kept rows' caption embeddings, and
    the rank to continue from, so a rerun decides as if it had never stopped."""
    from operators.dedup.operator import ResumeState as DedupState

    kept = [r for r in read_column_values(output, DATASET_DIR, [VIDEO_ID, TEXT_EMBEDDING, DEDUP_RANK])
            if r.get("text_embedding") is not None]
    ranks = [r[DEDUP_RANK] for r in kept if r.get("dedup_rank") is not None]
    ranks += [r[DEDUP_RANK] for r in read_column_values(output, REJECTED_DIR, [DEDUP_RANK])
              if r.get("dedup_rank") is not None]
    if not kept and not ranks:
        return None
    kept.sort(key=lambda r: r[DEDUP_RANK] if r.get("dedup_rank") is not None else -1)
    vectors = np.array([r["text_embedding"] for r in kept], dtype=np.float32).reshape(len(kept), -1)
    return DedupState(ids=[r[VIDEO_ID] for r in kept], vectors=vectors,
                      next_rank=max(ranks) + 1 if ranks else 0)


def drop_retryable_rows(output: str, path: str) -> int:
    """Take the rows a rerun may fix (reasons in ``RETRYABLE_REASONS``) out of one file of
    ``rejected/``; the number removed. One file per call, so a job runs it on its workers,
    file by file, without any process holding the ids (the rewrite is atomic, as in
    :func:`drop_rejections`). A retryable row beside a final decision is stale and goes too."""
    from operators.dataset.writer import parquet_bytes

    fs, _ = filesystem(output)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    drop = pc.fill_null(pc.is_in(table.column(REASON), value_set=pa.array(sorted(RETRYABLE_REASONS))), False)
    n = pc.sum(drop).as_py() or 0
    if not n:
        return 0
    if n == table.num_rows:
        fs.rm(path)
    else:
        kept = parquet_bytes(table.filter(pc.invert(drop)), _compression_of(fs, path))
        write_bytes_atomic(join(output, REJECTED_DIR, path.rsplit("/", 1)[-1]), kept)
    return n
