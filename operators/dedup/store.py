"""The kept vectors, in float32, in fixed-size chunks.

Chunks avoid the copy-and-double peaks of one growing array (a million 768-d vectors are 3 GiB)
and let exact search run over them in place. Every index the dedup builds is derived from here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Bytes of vectors per chunk; rows per chunk follow from the dimension.
CHUNK_BYTES = 64 * 1024 * 1024


def empty_chunk(rows: int, dim: int) -> np.ndarray:
    """An uninitialised float32 chunk, allocated without numpy's transparent-huge-page advice.

    numpy asks the kernel for huge pages on every array of 4 MB or more; with the common
    ``transparent_hugepage/defrag: madvise`` setting the kernel then compacts memory on the
    first touch of each page. Measured on the development VM: 3.5 s to fill 256 MiB fresh with
    the advice, 0.33-0.48 s without, which made first touch most of a pool rebuild's time.
    The pool is scanned sequentially, where huge pages gain little."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _set_madvise_hugepage
    previous = _set_madvise_hugepage(False)
    try:
        return np.empty((rows, dim), dtype=np.float32)
    finally:
        _set_madvise_hugepage(previous)


class KeptVectors:
    """Append-only float32 rows addressed by position (the order they were kept in)."""

    def __init__(self, dim: int, chunk_rows: int | None = None) -> None:
        self.dim = dim
        self.chunk_rows = chunk_rows or max(1024, CHUNK_BYTES // (4 * dim))
        self._chunks: list[np.ndarray] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, vectors: np.ndarray) -> None:
        done = 0
        while done < len(vectors):
            offset = self._size % self.chunk_rows
            if offset == 0:
                self._chunks.append(empty_chunk(self.chunk_rows, self.dim))
            take = min(self.chunk_rows - offset, len(vectors) - done)
            self._chunks[-1][offset : offset + take] = vectors[done : done + take]
            done += take
            self._size += take

    def chunks(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(position of the first row, filled rows) for every chunk holding rows >= start."""
        for c, chunk in enumerate(self._chunks):
            first = c * self.chunk_rows
            rows = min(self.chunk_rows, self._size - first)
            if first + rows <= start:
                continue
            skip = max(0, start - first)
            yield first + skip, chunk[skip:rows]

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (any shape of int), as an array of shape positions.shape + (dim,)."""
        flat = np.asarray(positions, dtype=np.int64).ravel()
        out = np.empty((len(flat), self.dim), dtype=np.float32)
        chunk_of, row_of = np.divmod(flat, self.chunk_rows)
        for c in np.unique(chunk_of):
            sel = chunk_of == c
            out[sel] = self._chunks[int(c)][row_of[sel]]
        return out.reshape(*np.shape(positions), self.dim)

    def sample(self, count: int, among_first: int | None = None) -> np.ndarray:
        """``count`` rows spread evenly over the first ``among_first`` rows (default: all);
        deterministic, no random state."""
        among_first = min(among_first or self._size, self._size)
        count = min(count, among_first)
        positions = np.linspace(0, among_first - 1, count).astype(np.int64)
        return self.gather(positions)


class IdColumn:
    """Append-only video ids addressed by position, held as Arrow string arrays.

    A Python ``str`` costs ~50 bytes over its characters; at millions of kept videos that
    overhead, and building the list on a rebuild, dominate. Ids are buffered as Python strings
    until ``BUFFER`` of them have arrived, then packed into one Arrow array."""

    BUFFER = 65_536

    def __init__(self) -> None:
        self._arrays: list = []  # pyarrow arrays
        self._starts: list[int] = []
        self._packed = 0
        self._pending: list[str] = []

    def __len__(self) -> int:
        return self._packed + len(self._pending)

    def extend(self, ids) -> None:
        """Add ids: any sequence of str, or a pyarrow string array (kept as is, no copy)."""
        import pyarrow as pa

        if isinstance(ids, (pa.Array, pa.ChunkedArray)):
            self._pack()
            arrays = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
            for array in arrays:
                if len(array):
                    self._starts.append(self._packed)
                    self._arrays.append(array)
                    self._packed += len(array)
            return
        self._pending.extend(str(i) for i in ids)
        if len(self._pending) >= self.BUFFER:
            self._pack()

    def __getitem__(self, position: int) -> str:
        position = int(position)
        if position < 0 or position >= len(self):
            raise IndexError(position)
        if position >= self._packed:
            return self._pending[position - self._packed]
        from bisect import bisect_right

        a = bisect_right(self._starts, position) - 1
        return self._arrays[a][position - self._starts[a]].as_py()

    def _pack(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._starts.append(self._packed)
            self._arrays.append(pa.array(self._pending, type=pa.string()))
            self._packed += len(self._pending)
            self._pending = []

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays) + 80 * len(self._pending)


class RankColumn:
    """Append-only int64 values (the decision rank of each kept vector) in chunks."""

    def __init__(self, chunk_rows: int = 1 << 20) -> None:
        self.chunk_rows = chunk_rows
        self._chunks: list[np.ndarray] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.int64)
        done = 0
        while done < len(values):
            offset = self._size % self.chunk_rows
            if offset == 0:
                self._chunks.append(np.empty(self.chunk_rows, dtype=np.int64))
            take = min(self.chunk_rows - offset, len(values) - done)
            self._chunks[-1][offset : offset + take] = values[done : done + take]
            done += take
            self._size += take

    def gather(self, positions: np.ndarray) -> np.ndarray:
        flat = np.asarray(positions, dtype=np.int64)
        chunk_of, row_of = np.divmod(flat, self.chunk_rows)
        out = np.empty(flat.shape, dtype=np.int64)
        for c in np.unique(chunk_of):
            sel = chunk_of == c
            out[sel] = self._chunks[int(c)][row_of[sel]]
        return out

    def last(self) -> int:
        """The last value appended (-1 when empty): ranks arrive in increasing order."""
        if not self._size:
            return -1
        return int(self._chunks[-1][(self._size - 1) % self.chunk_rows])
