"""The dedup pool split into parts by coarse centroid, searched by probing the nearest parts.

Until ``dedup.train_size`` videos are kept, the pool lives in the deciding worker (a local
``ShardPool``). Then ``dedup.shards`` centroids are trained (spherical k-means) on those first
kept vectors and saved, every kept vector so far goes to the part of its nearest centroid, and
from then on a query is sent to the ``dedup.probe_shards`` parts whose centroids are nearest to
it, and to every further part whose centroid is nearly as near (``dedup.probe_margin``), and the
best answer wins (ties: the earliest kept). A near-duplicate across a part boundary is found as
long as its part is among the probed ones; with ``probe_shards == shards``, or
``probe_margin == 1``, and exact parts the result is the exact greedy rule.

The margin: a kept vector y with cos(x, y) >= t lies within r = sqrt(2 - 2t) of the query x, so
it can sit in part j (be nearer to c_j than to x's own part's centroid c_h) only if
x.c_h - x.c_j <= r |c_h - c_j|: probing every part within that bound misses nothing, but in
high dimension it takes nearly every part. A near-duplicate's offset y - x is not aimed at the
boundary: spread over d_eff directions, its component along (c_j - c_h) / |c_j - c_h| is about
r / sqrt(d_eff). ``dedup.probe_margin`` z probes the parts within z of those standard deviations,
x.c_h - x.c_j <= min(1, z / sqrt(d_eff)) r |c_h - c_j|, with d_eff the participation ratio of
the training vectors' covariance ((sum of eigenvalues)^2 / sum of their squares; ~650 for
768-d clustered data, far fewer for anisotropic caption embeddings, which widens the margin).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from operators.dedup.config import DedupConfig
from operators.dedup.shard import NONE, ShardPool

logger = logging.getLogger(__name__)

NearestResult = tuple[np.ndarray, np.ndarray, list, int]  # sims, ranks, ids, size of the part


class ShardBackend(Protocol):
    def submit_nearest(self, x: np.ndarray) -> Callable[[], NearestResult]: ...
    def add(self, ids: Sequence[str], ranks: np.ndarray, vectors: np.ndarray) -> None: ...
    def last_rank(self) -> int: ...


class CentroidStore(Protocol):
    def load_centroids(self) -> np.ndarray | None: ...
    def save_centroids(self, centroids: np.ndarray) -> None: ...


class ShardLost(RuntimeError):
    """A part answered with fewer vectors than it was given: its worker restarted empty."""


class LocalShard:
    """A part held in this process."""

    def __init__(self, config: DedupConfig, dim: int) -> None:
        self.pool = ShardPool(config, dim)

    def submit_nearest(self, x: np.ndarray) -> Callable[[], NearestResult]:
        sims, ranks, ids = self.pool.nearest(x)
        size = len(self.pool)
        return lambda: (sims, ranks, ids, size)

    def add(self, ids: Sequence[str], ranks: np.ndarray, vectors: np.ndarray) -> None:
        self.pool.add(ids, ranks, vectors)

    def last_rank(self) -> int:
        return self.pool.last_rank()


def train_centroids(vectors: np.ndarray, k: int, seed: int = 1234) -> np.ndarray:
    """Unit centroids of spherical k-means; fixed seed, so the same vectors give the same parts."""
    import faiss

    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=20, seed=seed, spherical=True,
                          max_points_per_centroid=max(256, len(vectors) // k + 1))
    kmeans.train(np.ascontiguousarray(vectors, dtype=np.float32))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def spread_dimension(x: np.ndarray) -> float:
    """Participation ratio of the covariance of ``x``: (trace C)^2 / trace(C^2), the number of
    directions the vectors effectively spread over (d for isotropic data, 1 for a line)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    cov = x.T @ x / max(1, len(x))
    squares = float(np.sum(cov * cov))
    return float(np.trace(cov)) ** 2 / squares if squares > 0 else 1.0


class ShardedPool:
    """The pool as ``len(backends)`` parts; the deciding worker's view of it."""

    def __init__(self, config: DedupConfig, dim: int, backends: Sequence[ShardBackend],
                 centroids: CentroidStore | None = None) -> None:
        if len(backends) < 2:
            raise ValueError("a sharded pool needs at least 2 parts (dedup.shards)")
        self.config, self.dim = config, dim
        self.backends = list(backends)
        self.probe = min(config.probe_shards, len(backends))
        self.radius = float(np.sqrt(max(0.0, 2.0 - 2.0 * config.threshold)))
        self.queries = self.probed = 0  # queries sent to the parts, and part searches they made
        self._centroid_store = centroids
        self.centroids: np.ndarray | None = None
        self._reach: np.ndarray | None = None  # [K, K]: the margin's reach, x r x |c_i - c_j|
        self.spread_dim = 0.0  # d_eff of the training vectors
        self.bootstrap: ShardPool | None = ShardPool(config, dim)
        self.sizes = np.zeros(len(backends), dtype=np.int64)  # vectors routed to each part
        self._held = np.full(len(backends), NONE, dtype=np.int64)  # ranks a part already holds
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def start_restore(self) -> None:
        """Before replaying the logged kept vectors: ask each part what it still holds (after
        a restart of this worker, the parts may have survived), so only the rest is sent."""
        self._held = np.array([b.last_rank() for b in self.backends], dtype=np.int64)

    @property
    def probes_per_query(self) -> float:
        """Parts searched per query since the parts took over (probe_shards and the margin's)."""
        return self.probed / self.queries if self.queries else 0.0

    def _scores(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64) @ self.centroids.astype(np.float64).T

    def home(self, x: np.ndarray) -> np.ndarray:
        """The part each vector is inserted into: its nearest centroid (the first on a tie)."""
        return np.argmax(self._scores(x), axis=1)

    def probes(self, x: np.ndarray) -> np.ndarray:
        """[n, parts] bool: the parts each query searches, its home part among them."""
        scores = self._scores(x)
        rows = np.arange(len(x))[:, None]
        mask = np.zeros(scores.shape, dtype=bool)
        mask[rows, np.argsort(-scores, axis=1, kind="stable")[:, : self.probe]] = True
        if self.config.probe_margin > 0 and self.probe < len(self.backends):
            home = np.argmax(scores, axis=1)
            gap = scores[rows[:, 0], home][:, None] - scores
            mask |= gap <= self._reach[home]
        return mask

    def _set_centroids(self, centroids: np.ndarray, sample: np.ndarray) -> None:
        self.centroids = centroids
        self.spread_dim = spread_dimension(sample)
        c = centroids.astype(np.float64)
        distance = np.sqrt(np.maximum(0.0, np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1)))
        share = min(1.0, self.config.probe_margin / np.sqrt(max(self.spread_dim, 1.0)))
        self._reach = share * self.radius * distance

    def nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        if self.centroids is None:
            return self.bootstrap.nearest(x)
        probes = self.probes(x)
        self.queries += len(x)
        self.probed += int(probes.sum())
        waiting = []
        for s, backend in enumerate(self.backends):
            rows = np.flatnonzero(probes[:, s])
            if len(rows):
                waiting.append((s, rows, backend.submit_nearest(x[rows])))
        best = np.full(len(x), -np.inf)
        best_rank = np.full(len(x), NONE, dtype=np.int64)
        best_id: list[str | None] = [None] * len(x)
        for s, rows, result in waiting:
            sims, ranks, ids, size = result()
            if size != self.sizes[s]:
                raise ShardLost(f"dedup shard {s} holds {size} vectors, {self.sizes[s]} were sent to it")
            for r, sim, rank, vid in zip(rows, sims, ranks, ids, strict=True):
                if rank == NONE:
                    continue
                if sim > best[r] or (sim == best[r] and rank < best_rank[r]):
                    best[r], best_rank[r], best_id[r] = sim, rank, vid
        return best, best_rank, best_id

    def add(self, ids: Sequence[str], ranks: np.ndarray, vectors: np.ndarray) -> None:
        ranks = np.asarray(ranks, dtype=np.int64)
        self._size += len(ids)
        if self.centroids is None:
            self.bootstrap.add(ids, ranks, vectors)
            if len(self.bootstrap) >= self.config.train_size:
                self._split_bootstrap()
            return
        self._route(ids, ranks, vectors)

    def _route(self, ids: Sequence[str], ranks: np.ndarray, vectors: np.ndarray) -> None:
        home = self.home(vectors)
        for s in np.unique(home):
            rows = np.flatnonzero(home == s)
            self.sizes[s] += len(rows)
            rows = rows[ranks[rows] > self._held[s]]  # what a surviving part already has
            if len(rows):
                self.backends[s].add(_take(ids, rows), ranks[rows], vectors[rows])

    def _split_bootstrap(self) -> None:
        pool, n = self.bootstrap, len(self.bootstrap)
        saved = self._centroid_store.load_centroids() if self._centroid_store else None
        first = pool.store.gather(np.arange(self.config.train_size))
        if saved is not None and saved.shape == (len(self.backends), self.dim):
            self._set_centroids(saved, first)
        else:
            self._set_centroids(train_centroids(first, len(self.backends)), first)
            if self._centroid_store:
                self._centroid_store.save_centroids(self.centroids)
        logger.info("dedup: %d parts trained on the first %d kept vectors", len(self.backends),
                    self.config.train_size)
        step = 65_536
        for start in range(0, n, step):
            positions = np.arange(start, min(n, start + step))
            self._route([pool.ids[int(p)] for p in positions], pool.ranks.gather(positions),
                        pool.store.gather(positions))
        self.bootstrap = None


def _take(ids: Sequence[str], rows: np.ndarray) -> Sequence[str]:
    """``ids[rows]`` for a list of str or a pyarrow string array (a replayed log file)."""
    if hasattr(ids, "take"):
        import pyarrow as pa

        return ids.take(pa.array(rows))
    return [ids[int(r)] for r in rows]


def replay(pool: ShardedPool | ShardPool, chunks: Iterable[tuple[Sequence[str], np.ndarray, np.ndarray]]) -> int:
    """Add logged kept vectors (ids, ranks, vectors) in rank order; the number added."""
    if isinstance(pool, ShardedPool):
        pool.start_restore()
    added = 0
    for ids, ranks, vectors in chunks:
        pool.add(ids, ranks, vectors)
        added += len(ranks)
    return added
