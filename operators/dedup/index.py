"""Greedy incremental semantic dedup: the paper's rule, exact within and across batches.

In arrival order, a video is kept only if its highest cosine similarity to the videos already
kept is below the threshold. Per batch: one k-nearest search of the pool for the whole batch,
an exact rescore of those candidates, then the batch's own members are resolved greedily in
order against the members kept earlier in the same batch (a small batch x batch matrix), and
the kept vectors are added at once.

Similarities are the float64 dot product of the stored float32 unit vectors, whatever index
proposed the candidates, so exact mode reproduces a brute-force greedy pass and an approximate
index can only miss a neighbour, never misjudge one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from operators.dedup.config import DedupConfig
from operators.dedup.search import PoolSearch
from operators.dedup.store import KeptVectors

#: How far from 1 a vector's norm may be before it counts as not normalized.
NORM_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one video.

    ``similarity`` and ``nearest_id`` describe the most similar video kept before this one
    (``None`` when none was kept yet); ``rank`` is the global order of decisions.
    """

    kept: bool
    rank: int
    nearest_id: str | None
    similarity: float | None


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit vectors as the dedup defines it: float64 products (exact for
    float32 inputs) summed along the last axis. A function of the two vectors alone, so a
    pair scores the same whichever batch or index brought it up."""
    return np.sum(a * b, axis=-1)


def _closest_earlier(x64: np.ndarray, gram: np.ndarray, j: int, kept_rows: list[int]) -> tuple[int, float]:
    """The batch member kept before row j that is most similar to it, and that similarity.

    The float32 Gram matrix only shortlists (its error is far below 1e-4); the shortlist is
    rescored with ``similarity``."""
    row = gram[j, kept_rows]
    shortlist = [kept_rows[t] for t in np.flatnonzero(row >= row.max() - 1e-4)]
    sims = similarity(x64[shortlist], x64[j])
    b = int(np.argmax(sims))  # first maximum: the earliest kept
    return shortlist[b], float(sims[b])


class GreedyDedupIndex:
    """Holds the kept videos (ids and vectors) and decides new ones in order."""

    def __init__(self, config: DedupConfig, dim: int, start_rank: int = 0) -> None:
        self.config = config
        self.dim = dim
        self.next_rank = start_rank
        self.store = KeptVectors(dim)
        self.ids: list[str] = []
        self.search = PoolSearch(config, self.store)

    def __len__(self) -> int:
        return len(self.ids)

    def add_kept(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add videos known to be kept (a resumed run's written rows), without deciding them."""
        x = self._checked(ids, vectors)
        self.store.append(x)
        self.ids.extend(ids)

    def decide(self, ids: Sequence[str], vectors: np.ndarray) -> list[Decision]:
        """Decide a batch in order; ``vectors`` are float32 [n, dim], L2-normalized."""
        x = self._checked(ids, vectors)
        if len(ids) == 0:
            return []
        pool_sim, pool_pos = self._nearest_in_pool(x)
        x64 = x.astype(np.float64)
        gram = x @ x.T  # float32: only shortlists, see _closest_earlier
        threshold = self.config.threshold
        kept_rows: list[int] = []
        decisions: list[Decision] = []
        for j in range(len(ids)):
            sim = float(pool_sim[j])
            nearest = self.ids[pool_pos[j]] if pool_pos[j] >= 0 else None
            if kept_rows:
                b, batch_sim = _closest_earlier(x64, gram, j, kept_rows)
                # Pool members were kept earlier than batch members: they win ties.
                if nearest is None or batch_sim > sim:
                    sim, nearest = batch_sim, ids[b]
            kept = nearest is None or sim < threshold
            if kept:
                kept_rows.append(j)
            decisions.append(Decision(kept, self.next_rank, nearest, sim if nearest is not None else None))
            self.next_rank += 1
        if kept_rows:
            self.store.append(x[kept_rows])
            self.ids.extend(ids[j] for j in kept_rows)
        return decisions

    def _nearest_in_pool(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best exact similarity to the pool and its position per query (-inf, -1 if none)."""
        n = len(x)
        if not self.ids:
            return np.full(n, -np.inf), np.full(n, -1, dtype=np.int64)
        self.search.sync()
        _, positions = self.search.search(x, self.config.rescore_k)
        valid = positions >= 0
        candidates = self.store.gather(np.where(valid, positions, 0)).astype(np.float64)
        sims = similarity(candidates, x.astype(np.float64)[:, None, :])
        sims[~valid] = -np.inf
        best = sims.max(axis=1)
        # Among equal similarities, the earliest kept video is the nearest (as a greedy pass).
        tied = (sims == best[:, None]) & valid
        pos = np.where(tied, positions, np.iinfo(np.int64).max).min(axis=1)
        pos[~valid.any(axis=1)] = -1
        return best, pos

    def _checked(self, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim or len(x) != len(ids):
            raise ValueError(f"expected {len(ids)} vectors of dimension {self.dim}, got shape {x.shape}")
        norms = np.linalg.norm(x, axis=1)
        if not np.all(np.abs(norms - 1.0) <= NORM_TOLERANCE):
            raise ValueError("dedup vectors must be L2-normalized (and finite)")
        return x
