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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from operators.dedup.config import DedupConfig
from operators.dedup.shard import ShardPool, similarity
from operators.dedup.sharded import ShardedPool

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
    """Holds the kept videos (ids and vectors) and decides new ones in order.

    ``pool`` is where the kept vectors live: by default one ``ShardPool`` in this process;
    a ``ShardedPool`` spreads them over parts (``dedup.shards``)."""

    def __init__(self, config: DedupConfig, dim: int, start_rank: int = 0,
                 pool: ShardPool | ShardedPool | None = None) -> None:
        self.config = config
        self.dim = dim
        self.next_rank = start_rank
        self.pool = pool if pool is not None else ShardPool(config, dim)

    @property
    def search(self):  # the local pool's index (exact or approximate); for tests and benches
        return self.pool.search

    @property
    def store(self):
        return self.pool.store

    def __len__(self) -> int:
        return len(self.pool)

    def add_kept(self, ids: Sequence[str], vectors: np.ndarray, ranks: np.ndarray | None = None) -> None:
        """Add videos known to be kept (a resumed run's), without deciding them. ``ranks`` are
        their decision ranks (default: consecutive, ending below ``next_rank``)."""
        x = self._checked(ids, vectors)
        if ranks is None:
            ranks = np.arange(len(ids), dtype=np.int64) + max(0, self.next_rank - len(ids))
        self.pool.add(ids, ranks, x)

    def decide(self, ids: Sequence[str], vectors: np.ndarray,
               before_insert: Callable[[list[Decision], np.ndarray], None] | None = None) -> list[Decision]:
        """Decide a batch in order; ``vectors`` are float32 [n, dim], L2-normalized.

        ``before_insert(decisions, vectors)`` runs once the batch is decided and before its
        kept vectors join the pool (the operator logs the decisions there); if it raises, the
        pool and the ranks are as before the call."""
        x = self._checked(ids, vectors)
        if len(ids) == 0:
            return []
        pool_sim, _, pool_ids = self.pool.nearest(x)
        x64 = x.astype(np.float64)
        gram = x @ x.T  # float32: only shortlists, see _closest_earlier
        threshold = self.config.threshold
        kept_rows: list[int] = []
        decisions: list[Decision] = []
        rank = self.next_rank
        for j in range(len(ids)):
            sim = float(pool_sim[j])
            nearest = pool_ids[j]
            if kept_rows:
                b, batch_sim = _closest_earlier(x64, gram, j, kept_rows)
                # Pool members were kept earlier than batch members: they win ties.
                if nearest is None or batch_sim > sim:
                    sim, nearest = batch_sim, ids[b]
            kept = nearest is None or sim < threshold
            if kept:
                kept_rows.append(j)
            decisions.append(Decision(kept, rank, nearest, sim if nearest is not None else None))
            rank += 1
        if before_insert is not None:
            before_insert(decisions, x)
        self.next_rank = rank
        if kept_rows:
            self.pool.add([ids[j] for j in kept_rows],
                          np.array([decisions[j].rank for j in kept_rows], dtype=np.int64), x[kept_rows])
        return decisions

    def _checked(self, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim or len(x) != len(ids):
            raise ValueError(f"expected {len(ids)} vectors of dimension {self.dim}, got shape {x.shape}")
        norms = np.linalg.norm(x, axis=1)
        if not np.all(np.abs(norms - 1.0) <= NORM_TOLERANCE):
            raise ValueError("dedup vectors must be L2-normalized (and finite)")
        return x
