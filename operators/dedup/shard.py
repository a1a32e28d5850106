"""One part of the dedup pool: kept vectors, their ids and ranks, and the index over them.

``ShardPool`` answers "which kept video is most similar to each query, and how similar"
exactly (candidates from the index, rescored in float64). With ``dedup.shards: 1`` the deciding
worker holds the one pool itself; with more, each part lives in its own worker (a Ray actor in
``ray_jobs/dedup_shards.py`` wraps this class) and the decider merges their answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from operators.dedup.config import DedupConfig
from operators.dedup.search import PoolSearch
from operators.dedup.store import IdColumn, KeptVectors, RankColumn

#: Position of "no candidate" in search results, and rank of "no nearest video".
NONE = -1
#: Candidates whose float32 similarity is this close to the best one are rescored exactly.
#: A float32 dot product of two unit vectors of dimension d errs by at most d x 2^-24 (Cauchy-
#: Schwarz bounds the sum of |a_i b_i| by 1): 4.6e-5 at 768-d, 6.1e-5 at 1024-d; twice that
#: (either side) stays under 1.3e-4 up to 1024-d, and 2.5e-4 covers 2048-d.
SCREEN_MARGIN = 2.5e-4


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit vectors as the dedup defines it: float64 products (exact for
    float32 inputs) summed along the last axis. A function of the two vectors alone, so a
    pair scores the same whichever batch, shard or index brought it up."""
    return np.sum(a * b, axis=-1)


class ShardPool:
    """Kept vectors in insertion (= rank) order with an exact or approximate index."""

    def __init__(self, config: DedupConfig, dim: int) -> None:
        self.config = config
        self.dim = dim
        self.store = KeptVectors(dim)
        self.ids = IdColumn()
        self.ranks = RankColumn()
        self.search = PoolSearch(config, self.store)

    def __len__(self) -> int:
        return len(self.store)

    def last_rank(self) -> int:
        """Rank of the last vector added (-1 when empty): what a resync continues after."""
        return self.ranks.last()

    def add(self, ids: Sequence[str], ranks: np.ndarray, vectors: np.ndarray) -> None:
        """Append kept videos; ``ranks`` increase, and exceed every rank already held."""
        if len(ids) != len(vectors) or len(ranks) != len(vectors):
            raise ValueError(f"{len(ids)} ids, {len(ranks)} ranks and {len(vectors)} vectors")
        if not len(vectors):
            return
        self.store.append(np.ascontiguousarray(vectors, dtype=np.float32))
        self.ids.extend(ids)
        self.ranks.append(ranks)

    def nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Per query: best exact similarity (-inf if the pool is empty), the rank of that kept
        video (-1 if none) and its id (None if none). Among equal similarities the earliest
        kept video is the nearest, as in a greedy pass."""
        n = len(x)
        if not len(self.store):
            return np.full(n, -np.inf), np.full(n, NONE, dtype=np.int64), [None] * n
        self.search.sync()
        _, positions = self.search.search(x, self.config.candidates)
        valid = positions >= 0
        candidates = self.store.gather(np.where(valid, positions, 0))
        # Screen the candidates in float32 and rescore in float64 only those that can be the
        # best: for unit vectors a float32 product is within SCREEN_MARGIN / 2 of the exact one.
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        screen = np.matmul(candidates, x32[:, :, None])[..., 0]
        screen[~valid] = -np.inf
        close = valid & (screen >= screen.max(axis=1, keepdims=True) - SCREEN_MARGIN)
        sims = np.full(positions.shape, -np.inf)
        qi, ki = np.nonzero(close)
        sims[qi, ki] = similarity(candidates[qi, ki].astype(np.float64), x[qi].astype(np.float64))
        best = sims.max(axis=1)
        tied = (sims == best[:, None]) & valid
        pos = np.where(tied, positions, np.iinfo(np.int64).max).min(axis=1)
        found = valid.any(axis=1)
        ranks = np.full(n, NONE, dtype=np.int64)
        ranks[found] = self.ranks.gather(pos[found])
        ids = [self.ids[p] if f else None for p, f in zip(pos, found, strict=True)]
        return best, ranks, ids

    def memory_bytes(self) -> int:
        """Bytes held now (vectors, ids, ranks; an index's own copy not counted)."""
        return len(self.store) * (4 * self.dim + 8) + self.ids.nbytes()
