"""The kept vectors, in float32, in fixed-size chunks.

Chunks avoid the copy-and-double peaks of one growing array (a million 768-d vectors are 3 GiB)
and let exact search run over them in place. Every index the dedup builds is derived from here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Bytes of vectors per chunk; rows per chunk follow from the dimension.
CHUNK_BYTES = 64 * 1024 * 1024


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
                self._chunks.append(np.empty((self.chunk_rows, self.dim), dtype=np.float32))
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
