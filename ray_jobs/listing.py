"""The run's inputs as data: sources listed into Parquet shards by parallel Ray tasks, then the
rows still to process, decided on the workers.

1. :func:`write_listing`: one task per partition of each source (``source_partitions``: CSV
   chunks, folder prefixes, shards...) writes ``listing/FINGERPRINT/part-SSS-PPPPPP.parquet``.
   The fingerprint covers the ``input`` section and the size and mtime of the metadata files it
   names, so a rerun of the same config reuses the listing and a changed source is listed anew.
   The driver keeps one integer per partition.
2. :func:`pending_rows`: retryable rejections are dropped from ``rejected/`` file by file (tasks),
   then the listing and the ids in ``dataset/`` and ``rejected/`` are grouped by a hash bucket of
   ``video_id`` (a shuffle in plain Ray tasks) and :func:`operators.dataset.pending.resolve_bucket` keeps,
   per bucket, the rows with an id of their own and not yet decided, into
   ``OUTPUT/pending/`` (one Parquet file per bucket), which the stages read window by window.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from operators.dataset.pending import BUCKET, decided_for_buckets, listed_for_buckets, resolve_bucket
from operators.dataset.reader import parquet_files
from operators.dataset.resume import drop_retryable_rows
from operators.dataset.schema import (
    LISTING_DIR,
    LISTING_DONE_FILE,
    LISTING_PART,
    LISTING_ROW,
    LISTING_SCHEMA,
    PENDING_DIR,
    REJECTED_DIR,
    RESULT_DIRS,
    VIDEO_ID,
)
from operators.io import filesystem, join, write_bytes_atomic
from operators.sources import list_source_partition, source_partitions
from ray_jobs.config import ConfigError, PipelineConfig

logger = logging.getLogger(__name__)

#: Rows per listing Parquet row group / per block handed to the resume shuffle.
LISTING_BATCH_ROWS = 50_000
#: Ids per resume bucket: a bucket's rows are held by one worker while it is resolved.
ROWS_PER_BUCKET = 250_000
#: Most resume buckets (a map task returns one object per bucket).
MAX_BUCKETS = 4096
#: Fields of a source's config that name a metadata file whose size and mtime the fingerprint takes.
METADATA_FIELDS = ("csv", "path", "metadata")


@dataclass(frozen=True)
class Listing:
    path: str
    rows: int
    rows_per_source: tuple[int, ...]
    #: Files the sources left out for their extension, per extension (a few dozen keys at most).
    skipped_by_extension: tuple[tuple[str, int], ...] = ()

    def buckets(self, rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
        """Resume buckets for buckets of about ``rows_per_bucket`` listed rows (4,096 at most)."""
        return max(1, min(MAX_BUCKETS, -(-self.rows // rows_per_bucket)))


def source_prefixes(config: PipelineConfig) -> list[str | None]:
    """The prefix of each source's ids: its ``name``, else ``{kind}{k}`` when several sources of
    the run have its kind, else none."""
    kinds = [s.kind for s in config.input]
    seen: dict[str, int] = {}
    prefixes: list[str | None] = []
    for source in config.input:
        k = seen.get(source.kind, 0)
        seen[source.kind] = k + 1
        prefixes.append(source.name or (f"{source.kind}{k}" if kinds.count(source.kind) > 1 else None))
    return prefixes


def _file_stamp(uri: str) -> Any:
    try:
        fs, path = filesystem(uri)
        info = fs.info(path)
    except (OSError, ValueError):
        return None
    if info.get("type") == "directory":
        return None
    return [info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("updated"))]


def listing_fingerprint(config: PipelineConfig) -> str:
    """A hash of the ``input`` section and of the size and mtime of each metadata file it names."""
    sources = [s.model_dump(mode="json") for s in config.input]
    stamps = [{f: _file_stamp(s[f]) for f in METADATA_FIELDS if isinstance(s.get(f), str)} for s in sources]
    text = json.dumps({"input": sources, "files": stamps, "version": 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _batches(rows: Iterator[dict[str, Any]], prefix: str | None, part_number: int) -> Iterator[pa.RecordBatch]:
    chunk: list[dict[str, Any]] = []
    n = 0
    for row in rows:
        if prefix:
            row = {**row, VIDEO_ID: f"{prefix}/{row[VIDEO_ID]}"}
        chunk.append({**row, LISTING_PART: part_number, LISTING_ROW: n})
        n += 1
        if len(chunk) == LISTING_BATCH_ROWS:
            yield pa.RecordBatch.from_pylist(chunk, schema=LISTING_SCHEMA)
            chunk = []
    if chunk or n == 0:
        yield pa.RecordBatch.from_pylist(chunk, schema=LISTING_SCHEMA)


def list_one_partition(config: PipelineConfig, source_index: int, part: dict[str, Any],
                       part_number: int, target: str) -> dict[str, Any] | str:
    """List one partition of one source into ``target`` (a Parquet file): its number of rows
    and the files it left out by extension, or the config error that stops the run. Rows
    become Arrow one batch at a time, so a task's memory is one batch."""
    import pyarrow.parquet as pq

    source = config.input[source_index]
    prefix = source_prefixes(config)[source_index]
    rows = 0
    fs, path = filesystem(target)
    tmp = f"{path}.{os.getpid()}.partial"  # a name read_parquet skips (not *.parquet)
    try:
        listed = list_source_partition(source, part)
        with fs.open(tmp, "wb") as f, pq.ParquetWriter(f, LISTING_SCHEMA, compression="zstd") as writer:
            for batch in _batches(listed, prefix, part_number):
                writer.write_batch(batch, row_group_size=LISTING_BATCH_ROWS)
                rows += batch.num_rows
    except (OSError, ValueError) as exc:
        return f"input.{source_index} ({source.kind}): {exc}"
    fs.mv(tmp, path)
    return {"rows": rows, "skipped": dict(getattr(listed, "skipped_by_extension", None) or {})}


def write_listing(config: PipelineConfig) -> Listing:
    """The run's listing, reused when complete for this fingerprint, else written by tasks."""
    import ray

    folder = join(config.output, LISTING_DIR, listing_fingerprint(config))
    fs, done_path = filesystem(join(folder, LISTING_DONE_FILE))
    if fs.exists(done_path):
        with fs.open(done_path, "rb") as f:
            done = json.load(f)
        logger.info("reusing the listing in %s (%d rows)", folder, done["rows"])
        return Listing(folder, done["rows"], tuple(done["rows_per_source"]),
                       tuple(done.get("skipped_by_extension", {}).items()))
    fs.makedirs(filesystem(folder)[1], exist_ok=True)
    task = ray.remote(num_cpus=1, max_retries=2)(list_one_partition)
    config_ref = ray.put(config)
    per_source = [0] * len(config.input)
    skipped: Counter = Counter()
    in_flight: dict[Any, int] = {}
    limit = max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)
    number = 0
    for i, source in enumerate(config.input):
        try:
            parts = source_partitions(source)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"input.{i} ({source.kind}): {exc}") from exc
        for part in parts:
            target = join(folder, f"part-{i:03d}-{number:06d}.parquet")
            in_flight[task.remote(config_ref, i, part, number, target)] = i
            number += 1
            while len(in_flight) >= limit:
                _collect(in_flight, per_source, skipped, ray.wait(list(in_flight), num_returns=1)[0])
    while in_flight:
        _collect(in_flight, per_source, skipped, ray.wait(list(in_flight), num_returns=1)[0])
    for i, count in enumerate(per_source):
        if count == 0:
            raise ConfigError(f"input.{i} ({config.input[i].kind}): the source lists no video")
    summary = {"rows": sum(per_source), "rows_per_source": per_source, "partitions": number,
               "skipped_by_extension": dict(skipped.most_common())}
    write_bytes_atomic(join(folder, LISTING_DONE_FILE), json.dumps(summary).encode())
    logger.info("listed %d rows from %d partitions into %s", summary["rows"], number, folder)
    return Listing(folder, summary["rows"], tuple(per_source), tuple(skipped.most_common()))


def _collect(in_flight: dict[Any, int], per_source: list[int], skipped: Counter, ready: list[Any]) -> None:
    import ray

    for ref in ready:
        source = in_flight.pop(ref)
        result = ray.get(ref)
        if isinstance(result, str):
            raise ConfigError(result)
        per_source[source] += result["rows"]
        skipped.update(result["skipped"])


def _arrow_fs(output: str) -> Any:
    """The pyarrow filesystem Ray Data reads ``output`` with (None: local paths)."""
    fs, _ = filesystem(output)
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fs))


#: ``rejected/`` files per retry-drop task: a task per file would cost more than the file.
FILES_PER_TASK = 500


def _drop_retryable_in(output: str, paths: list[str]) -> int:
    return sum(drop_retryable_rows(output, path) for path in paths)


def drop_retryable(output: str) -> int:
    """Drop retryable rejections from ``rejected/``, file by file in tasks of
    :data:`FILES_PER_TASK` files; the number of rows removed."""
    import ray

    _, files = parquet_files(output, REJECTED_DIR)
    if not files:
        return 0
    task = ray.remote(num_cpus=0.5, max_retries=2)(_drop_retryable_in)
    chunks = [files[i:i + FILES_PER_TASK] for i in range(0, len(files), FILES_PER_TASK)]
    return sum(ray.get([task.remote(output, chunk) for chunk in chunks]))


def read_listing(listing: Listing, output: str) -> Any:
    import ray.data

    return ray.data.read_parquet(listing.path, filesystem=_arrow_fs(output), file_extensions=["parquet"])


#: Compressed Parquet bytes one resume map task reads (listing rows, or results' id column).
BYTES_PER_MAP_TASK = 128 << 20
#: Most files one resume map task opens.
FILES_PER_MAP_TASK = 500


def _file_groups(output: str, paths: list[str]) -> list[list[str]]:
    """``paths`` cut into groups of at most :data:`BYTES_PER_MAP_TASK` bytes (by the sizes a
    listing of their folders reports) and :data:`FILES_PER_MAP_TASK` files."""
    fs, _ = filesystem(output)
    sizes: dict[str, int] = {}
    for folder in sorted({p.rsplit("/", 1)[0] for p in paths}):
        for info in fs.ls(folder, detail=True):
            sizes[info["name"]] = int(info.get("size") or 0)
    groups: list[list[str]] = []
    group: list[str] = []
    size = 0
    for path in paths:
        if group and (size + sizes.get(path, 0) > BYTES_PER_MAP_TASK or len(group) >= FILES_PER_MAP_TASK):
            groups.append(group)
            group, size = [], 0
        group.append(path)
        size += sizes.get(path, 0)
    if group:
        groups.append(group)
    return groups


def _bucketed(output: str, paths: list[str], decided: bool, buckets: int) -> Any:
    """One resume map task: the rows of ``paths`` (listing rows, or the ids of results when
    ``decided``) cut into ``buckets`` tables by the hash of their id (one return per bucket)."""
    import numpy as np
    import pyarrow.parquet as pq

    fs, _ = filesystem(output)
    tables = []
    for path in paths:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f, columns=[VIDEO_ID] if decided else None)
        tables.append(decided_for_buckets(table, buckets) if decided else listed_for_buckets(table, buckets))
    table = pa.concat_tables(tables)
    if buckets == 1:
        return table
    bucket = table.column(BUCKET).to_numpy()
    table = table.take(pa.array(np.argsort(bucket, kind="stable")))
    ends = np.cumsum(np.bincount(bucket, minlength=buckets))
    return tuple(table.slice(int(end - count), int(count))
                 for end, count in zip(ends, np.diff(ends, prepend=0), strict=True))


def _resolved(target: str, *pieces: pa.Table) -> int:
    """One resume reduce task: a bucket's pieces resolved, its rows still to do written to
    ``target`` (nothing when there are none); how many."""
    import pyarrow.parquet as pq

    table = resolve_bucket(pa.concat_tables(pieces))
    if table.num_rows:
        fs, path = filesystem(target)
        tmp = f"{path}.{os.getpid()}.partial"
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd", row_group_size=LISTING_BATCH_ROWS)
        fs.mv(tmp, path)
    return table.num_rows


@dataclass
class Pending:
    """The rows a run still has to process: ``files`` (Parquet, one per resume bucket that has
    any, with their row counts) under ``OUTPUT/pending/``, ``rows`` in all."""

    files: list[tuple[str, int]]
    rows: int
    output: str = ""

    @property
    def dataset(self) -> Any:
        """All of them as one Dataset."""
        return read_pending([path for path, _ in self.files], self.output)


def read_pending(paths: list[str], output: str) -> Any:
    """A Dataset of the pending files ``paths`` (of the run on ``output``)."""
    import ray.data

    return ray.data.read_parquet(paths, filesystem=_arrow_fs(output), file_extensions=["parquet"])


def clear_pending(output: str) -> None:
    """Remove ``OUTPUT/pending/`` (an earlier run's, or this run's once it is done)."""
    fs, path = filesystem(join(output, PENDING_DIR))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def pending_rows(listing: Listing, output: str, rows_per_bucket: int = ROWS_PER_BUCKET) -> Pending:
    """The listed rows to process: unique ids, none decided by an earlier run.

    A hash shuffle in Ray tasks: map tasks read listing files, and the id column of the files
    in ``dataset/`` and ``rejected/``, in groups of :data:`BYTES_PER_MAP_TASK`, and cut their
    rows into buckets of about ``rows_per_bucket`` listed rows (at most
    :data:`ROWS_PER_BUCKET`) by a hash of the id; one task per bucket
    (:func:`resolve_bucket`) keeps the rows with an id of their own and not yet decided and
    writes them to ``OUTPUT/pending/bucket-BBBBB.parquet``. The driver holds object references
    only (map tasks x buckets) and one count per bucket; the stages read the files, window by
    window (:mod:`ray_jobs.windows`). (Ray Data's ``groupby().map_groups()`` did the same work
    with ~20 s of fixed cost per run on a small cluster: its shuffle actors start first.)"""
    import ray

    clear_pending(output)
    folder = join(output, PENDING_DIR)
    fs, path = filesystem(folder)
    fs.makedirs(path, exist_ok=True)
    buckets = listing.buckets(min(rows_per_bucket, ROWS_PER_BUCKET))
    map_task = ray.remote(num_cpus=0.5, max_retries=3, num_returns=buckets)(_bucketed)
    inputs: list[tuple[list[str], bool]] = []
    _, listed = parquet_files(output, listing_folder_of(listing, output))
    inputs += [(group, False) for group in _file_groups(output, listed)]
    for result_dir in RESULT_DIRS:
        _, files = parquet_files(output, result_dir)
        inputs += [(group, True) for group in _file_groups(output, files)]
    mapped = [map_task.remote(output, group, decided, buckets) for group, decided in inputs]
    if buckets == 1:
        mapped = [[ref] for ref in mapped]
    reduce_task = ray.remote(num_cpus=0.5, max_retries=3)(_resolved)
    targets = [join(folder, f"bucket-{b:05d}.parquet") for b in range(buckets)]
    resolved = [reduce_task.remote(targets[b], *[refs[b] for refs in mapped]) for b in range(buckets)]
    del mapped
    counts = ray.get(resolved)
    files = [(target, count) for target, count in zip(targets, counts, strict=True) if count]
    return Pending(files, sum(counts), output)


def listing_folder_of(listing: Listing, output: str) -> str:
    """The listing's folder relative to ``output`` (what :func:`parquet_files` takes)."""
    prefix = output.rstrip("/") + "/"
    return listing.path[len(prefix):] if listing.path.startswith(prefix) else listing.path
