"""The run's inputs as data: sources listed into Parquet shards by parallel Ray tasks, then the
rows still to process, decided on the workers.

1. :func:`write_listing`: one task per partition of each source (``source_partitions``: CSV
   chunks, folder prefixes, shards...) writes ``listing/FINGERPRINT/part-SSS-PPPPPP.parquet``.
   The fingerprint covers the ``input`` section and the size and mtime of the metadata files it
   names, so a rerun of the same config reuses the listing and a changed source is listed anew.
   The driver keeps one integer per partition.
2. :func:`pending_rows`: retryable rejections are dropped from ``rejected/`` file by file (tasks),
   then the listing and the ids in ``dataset/`` and ``rejected/`` are grouped by a hash bucket of
   ``video_id`` (a Ray Data shuffle) and :func:`operators.dataset.pending.resolve_bucket` keeps,
   per bucket, the rows with an id of their own and not yet decided.
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

from operators.dataset.pending import decided_for_buckets, listed_for_buckets, resolve_bucket
from operators.dataset.reader import parquet_files
from operators.dataset.resume import drop_retryable_rows
from operators.dataset.schema import (
    LISTING_DIR,
    LISTING_DONE_FILE,
    LISTING_PART,
    LISTING_ROW,
    LISTING_SCHEMA,
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
#: Fields of a source's config that name a metadata file whose size and mtime the fingerprint takes.
METADATA_FIELDS = ("csv", "path", "metadata")


@dataclass(frozen=True)
class Listing:
    path: str
    rows: int
    rows_per_source: tuple[int, ...]
    #: Files the sources left out for their extension, per extension (a few dozen keys at most).
    skipped_by_extension: tuple[tuple[str, int], ...] = ()

    @property
    def buckets(self) -> int:
        return max(1, min(4096, -(-self.rows // ROWS_PER_BUCKET)))


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


def pending_rows(listing: Listing, output: str) -> Any:
    """The Ray Dataset of listed rows to process: unique ids, none decided by an earlier run."""
    import ray.data

    buckets = listing.buckets
    arrow_fs = _arrow_fs(output)
    parts = [read_listing(listing, output).map_batches(
        listed_for_buckets, fn_kwargs={"buckets": buckets}, batch_format="pyarrow",
        batch_size=LISTING_BATCH_ROWS, num_cpus=0.5)]
    for folder in RESULT_DIRS:
        _, files = parquet_files(output, folder)
        if files:
            decided = ray.data.read_parquet(files, filesystem=arrow_fs).select_columns([VIDEO_ID])
            parts.append(decided.map_batches(
                decided_for_buckets, fn_kwargs={"buckets": buckets}, batch_format="pyarrow",
                batch_size=LISTING_BATCH_ROWS, num_cpus=0.5))
    rows = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return rows.groupby("id_bucket", num_partitions=buckets).map_groups(
        resolve_bucket, batch_format="pyarrow", num_cpus=0.5)
