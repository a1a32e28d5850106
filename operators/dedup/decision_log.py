"""The dedup decision log: every decision, on the output storage, before its batch moves on.

``OUTPUT/dedup_log/`` holds one Parquet file per decided batch, named by the first and last
rank it holds (``000000000512-000000000767.parquet``) and written atomically (temporary name,
then rename), so a file is either whole or absent. Once the batch files add up to
``dedup.log_file_rows`` decisions they are merged into one file named by the whole range, and
then removed; a reader skips a file whose range another file covers, so a merge cut short
(merged file written, small ones not yet removed) reads the same. Columns: ``video_id``, ``dedup_rank``,
``kept``, ``nearest_id``, ``similarity`` and ``vector`` (the unit caption embedding as a
fixed-size float32 list). ``centroids.npy`` holds the part centroids once trained.

The log, not ``dataset/``, is what the pool is rebuilt from: a video kept by dedup stays in
the pool whatever later stages do with it, and a video decided but not yet written when the
worker or driver died keeps its decision (and rank) on the next try. Reading goes file by
file (a few read ahead by threads) and Arrow to numpy, so a rebuild holds the pool plus a few files.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.io import filesystem, join, write_bytes_atomic

logger = logging.getLogger(__name__)

LOG_FOLDER = "dedup_log"
CENTROIDS_FILE = "centroids.npy"
COLUMNS = ("video_id", "dedup_rank", "kept", "nearest_id", "similarity", "vector")
VECTOR_PATH = "vector.list.element"  # the vector's values, as Parquet names the leaf column
#: Log files read ahead during a rebuild.
READ_AHEAD = max(2, min(8, os.cpu_count() or 2))
#: Rows per Parquet row group of a log file (a merged file is read a group at a time).
BATCH_ROWS_PER_GROUP = 2048
_NAME = re.compile(r"(\d+)-(\d+)\.parquet$")


def log_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("video_id", pa.string()), ("dedup_rank", pa.int64()), ("kept", pa.bool_()),
        ("nearest_id", pa.string()), ("similarity", pa.float64()),
        ("vector", pa.list_(pa.float32(), dim)),
    ])


@dataclass(frozen=True)
class LogFile:
    first: int
    last: int
    path: str


@dataclass(frozen=True)
class LoggedDecision:
    video_id: str
    rank: int
    kept: bool
    nearest_id: str | None
    similarity: float | None


def hash_ids(ids: pa.Array | Sequence[str]) -> np.ndarray:
    """64-bit hashes of video ids (vectorized; only compared within one process)."""
    from pandas.util import hash_array

    values = ids.to_numpy(zero_copy_only=False) if isinstance(ids, pa.Array) else np.asarray(ids, dtype=object)
    return hash_array(values.astype(object), categorize=False)


class LoggedIds:
    """Which ids the log holds, and their ranks: sorted hashes, 16 bytes a decision. A hit is
    checked against the log itself (``DecisionLog.decisions_at``), so a hash collision cannot
    make a video inherit another's decision."""

    def __init__(self, hashes: np.ndarray, ranks: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.ranks = hashes[order], ranks[order]

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, ids: Sequence[str]) -> np.ndarray:
        """The logged rank of each id, -1 for ids not logged."""
        if not len(self.hashes) or not len(ids):
            return np.full(len(ids), -1, dtype=np.int64)
        h = hash_ids(ids)
        at = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        return np.where(self.hashes[at] == h, self.ranks[at], -1)


class DecisionLog:
    """Append and read ``OUTPUT/dedup_log/``."""

    def __init__(self, output: str, compression: str = "zstd", file_rows: int = 0) -> None:
        self.output = output
        self.folder = join(output, LOG_FOLDER)
        self.compression = compression
        self.file_rows = file_rows
        self._unmerged: int | None = None  # decisions in files not merged yet (None: not counted)

    def files(self) -> list[LogFile]:
        """Complete log files in rank order (temporary files have no rank in their name),
        without those whose ranks a merged file holds too."""
        return _uncovered(self._listed())

    def _listed(self) -> list[LogFile]:
        fs, root = filesystem(self.folder)
        if not fs.exists(root):
            return []
        found = []
        for path in fs.ls(root, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            match = _NAME.fullmatch(name)
            if match and not name.startswith("."):
                found.append(LogFile(int(match[1]), int(match[2]), path))
        return found

    def append(self, ids: Sequence[str], ranks: Sequence[int], kept: Sequence[bool],
               nearest: Sequence[str | None], sims: Sequence[float | None], vectors: np.ndarray) -> None:
        """Write one batch's decisions as one file; returns once it is durable."""
        if not len(ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table([
            pa.array(list(ids), type=pa.string()), pa.array(np.asarray(ranks, dtype=np.int64)),
            pa.array(list(kept), type=pa.bool_()), pa.array(list(nearest), type=pa.string()),
            pa.array(list(sims), type=pa.float64()), pa.FixedSizeListArray.from_arrays(flat, dim),
        ], schema=log_schema(dim))
        if self.file_rows and self._unmerged is None:
            self._unmerged = sum(f.last - f.first + 1 for f in self._small_files())
        self._write(table, int(min(ranks)), int(max(ranks)))
        if self.file_rows:
            self._unmerged += len(ids)
            if self._unmerged >= self.file_rows:
                self.compact()

    def _write(self, table: pa.Table, first: int, last: int) -> str:
        sink = io.BytesIO()
        # Dictionary encoding of the floats made files 1.5x the raw vectors and 3x slower to
        # read back; split float bytes compress to ~0.86x (measured on unit 768-d vectors).
        pq.write_table(table, sink, compression=self.compression, row_group_size=BATCH_ROWS_PER_GROUP,
                       use_dictionary=["video_id", "nearest_id"], use_byte_stream_split=[VECTOR_PATH])
        path = join(self.folder, f"{first:012d}-{last:012d}.parquet")
        write_bytes_atomic(path, sink.getvalue())
        return path

    def _small_files(self) -> list[LogFile]:
        """The files after the last one of ``file_rows`` decisions or more."""
        files = self.files()
        big = [i for i, f in enumerate(files) if f.last - f.first + 1 >= self.file_rows]
        return files[big[-1] + 1:] if big else files

    def compact(self) -> int:
        """Merge the batch files written since the last merged file into one (then remove
        them); the number of files merged. The only writer of the log calls it, between batches."""
        small = self._small_files()
        self._unmerged = 0
        if len(small) < 2:
            return 0
        fs, _ = filesystem(self.folder)
        tables = []
        for f in small:
            with fs.open(f.path, "rb") as handle:
                tables.append(pq.read_table(handle))
        first, last = small[0].first, small[-1].last
        merged = filesystem(self._write(pa.concat_tables(tables).combine_chunks(), first, last))[1]
        for f in self._listed():  # the merged files, and any a merge cut short left behind
            if first <= f.first and f.last <= last and f.path.rstrip("/") != merged.rstrip("/"):
                fs.rm(f.path)
        logger.info("dedup: merged %d decision log files (ranks %d-%d)", len(small), first, last)
        return len(small)

    def tables(self, columns: Sequence[str] = COLUMNS, ahead: int = READ_AHEAD) -> Iterator[pa.Table]:
        """The log in rank order, a Parquet row group (a batch file, or a part of a merged file)
        at a time. ``ahead`` row groups are read and decoded by a thread pool while the caller
        works on the current one (Parquet decoding releases the GIL; on an object store the
        reads overlap their latency); at most ``ahead`` are held beyond the one yielded."""
        fs, _ = filesystem(self.folder)

        def groups() -> Iterator[tuple[LogFile, int]]:
            for f in self.files():
                count = 1
                if f.last - f.first + 1 > BATCH_ROWS_PER_GROUP:  # a merged file: a few per run
                    with fs.open(f.path, "rb") as handle:
                        count = pq.ParquetFile(handle).num_row_groups
                yield from ((f, g) for g in range(count))

        def read(f: LogFile, group: int) -> pa.Table:
            with fs.open(f.path, "rb") as handle:
                return pq.ParquetFile(handle).read_row_group(group, columns=list(columns), use_threads=False)

        units = groups()
        with ThreadPoolExecutor(max_workers=max(1, ahead), thread_name_prefix="dedup-log") as pool:
            pending: deque = deque(pool.submit(read, *u) for u in islice(units, max(1, ahead)))
            while pending:
                table = pending.popleft().result()
                for u in islice(units, 1):
                    pending.append(pool.submit(read, *u))
                yield table

    def dim(self) -> int | None:
        files = self.files()
        if not files:
            return None
        fs, _ = filesystem(self.folder)
        with fs.open(files[0].path, "rb") as handle:
            return pq.ParquetFile(handle).schema_arrow.field("vector").type.list_size

    def decisions_at(self, ranks: Sequence[int]) -> dict[int, LoggedDecision]:
        """The logged decisions of these ranks (reads only the files that hold them)."""
        wanted = sorted({int(r) for r in ranks})
        if not wanted:
            return {}
        fs, _ = filesystem(self.folder)
        out: dict[int, LoggedDecision] = {}
        columns = ["video_id", "dedup_rank", "kept", "nearest_id", "similarity"]
        for f in self.files():
            hits = [r for r in wanted if f.first <= r <= f.last]
            if not hits:
                continue
            with fs.open(f.path, "rb") as handle:
                table = pq.read_table(handle, columns=columns)
            table = table.filter(pc.is_in(table["dedup_rank"], value_set=pa.array(hits, type=pa.int64())))
            for row in table.to_pylist():  # a few rows: the batch being re-sent
                out[row["dedup_rank"]] = LoggedDecision(row["video_id"], row["dedup_rank"], row["kept"],
                                                        row["nearest_id"], row["similarity"])
        return out

    def save_centroids(self, centroids: np.ndarray) -> None:
        sink = io.BytesIO()
        np.save(sink, np.ascontiguousarray(centroids, dtype=np.float32))
        write_bytes_atomic(join(self.folder, CENTROIDS_FILE), sink.getvalue())

    def load_centroids(self) -> np.ndarray | None:
        fs, path = filesystem(join(self.folder, CENTROIDS_FILE))
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as handle:
            return np.load(io.BytesIO(handle.read()))


def _uncovered(files: list[LogFile]) -> list[LogFile]:
    """``files`` in rank order without those whose range lies inside another's."""
    out: list[LogFile] = []
    for f in sorted(files, key=lambda f: (f.first, -f.last)):
        if out and f.last <= out[-1].last:
            continue  # its ranks are in a merged file
        out.append(f)
    return out


@dataclass
class Rebuilt:
    """What a rebuild found: the next rank to give, and the logged ids."""

    next_rank: int
    logged: LoggedIds
    decisions: int
    kept: int


def kept_chunks(log: DecisionLog, counts: dict) -> Iterator[tuple[pa.Array, np.ndarray, np.ndarray]]:
    """(ids, ranks, vectors) of the kept rows, file by file in rank order, Arrow to numpy.
    Fills ``counts`` with the hashes and ranks of every logged decision on the way."""
    hashes, ranks_all = counts.setdefault("hashes", []), counts.setdefault("ranks", [])
    for table in log.tables(("video_id", "dedup_rank", "kept", "vector")):
        ids = table["video_id"].combine_chunks()
        ranks = table["dedup_rank"].to_numpy()
        hashes.append(hash_ids(ids))
        ranks_all.append(ranks)
        kept = table["kept"].to_numpy(zero_copy_only=False)
        if not kept.any():
            continue
        column = table["vector"].combine_chunks()
        vectors = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
        yield ids.filter(pa.array(kept)), ranks[kept], vectors[kept]
