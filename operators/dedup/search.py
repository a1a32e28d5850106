"""Candidate search over the kept vectors: exact (flat, CPU or GPU) or approximate (IVF, HNSW).

``PoolSearch`` only proposes candidates (positions in ``KeptVectors``); the greedy rule in
``index.py`` rescores them exactly, so an approximate index can only miss a neighbour, never
misjudge one. Indexes are derived from the stored vectors and caught up lazily in ``sync()``,
so a bulk rebuild on resume trains once, not once per chunk.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import numpy as np

from operators.dedup.config import DedupConfig
from operators.dedup.store import KeptVectors

logger = logging.getLogger(__name__)


def gpu_wanted(use_gpu: bool | str) -> bool:
    if use_gpu is False:
        return False
    import faiss

    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu is True and not available:
        raise ValueError("dedup.use_gpu is true but faiss sees no GPU")
    return available


@contextmanager
def _single_thread() -> Any:
    """Parallel HNSW insertion depends on thread timing; one thread keeps the graph deterministic."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class PoolSearch:
    """Top-k inner-product candidates among the kept vectors."""

    def __init__(self, config: DedupConfig, store: KeptVectors) -> None:
        self.config = config
        self.store = store
        self.on_gpu = gpu_wanted(config.use_gpu)
        self._gpu_res: Any = None
        self._gpu_flat: Any = None
        self._gpu_size = 0
        self.ann: Any = None  # the approximate index, once built
        self._ann_size = 0
        self._trained_at = 0

    @property
    def approximate_active(self) -> bool:
        return self.ann is not None

    def sync(self) -> None:
        """Bring the active index up to date with the store (build, retrain or add)."""
        n = len(self.store)
        if self.config.mode == "approximate" and n >= self.config.approximate_min_pool:
            target = self._training_size(n)
            if self.ann is None or target != self._trained_at:
                self._build_ann(target)
            elif self._ann_size < n:
                self._add_to_ann(self._ann_size)
            self._release_gpu()
            return
        if self.on_gpu and self._gpu_size < n:
            self._add_to_gpu()

    def _training_size(self, n: int) -> int:
        """How many of the first kept vectors the approximate index is trained on at pool size n.

        A function of n alone (min_pool, then min_pool x growth^k), so a resumed run, whose
        pool arrives in one bulk add, trains on exactly the vectors an uninterrupted run did.
        """
        size = self.config.approximate_min_pool
        growth = self.config.ivf_retrain_growth
        if self.config.approximate_kind == "ivf" and growth is not None:
            while size * growth <= n:
                size = max(size + 1, int(size * growth))
        return size

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities float32 [n, k], positions int64 [n, k]); position -1 where none."""
        k = min(k, len(self.store))
        if self.ann is not None:
            return self.ann.search(queries, k)
        if self._gpu_flat is not None:
            return self._gpu_flat.search(queries, k)
        return self._exact_cpu(queries, k)

    def _exact_cpu(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        sims, positions = [], []
        for first, rows in self.store.chunks():
            d, i = faiss.knn(queries, rows, min(k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT)
            sims.append(d)
            positions.append(np.where(i >= 0, i + first, -1))
        if len(sims) == 1:
            return sims[0], positions[0]
        all_sims = np.concatenate(sims, axis=1)
        all_pos = np.concatenate(positions, axis=1)
        top = np.argpartition(-all_sims, k - 1, axis=1)[:, :k]
        return np.take_along_axis(all_sims, top, 1), np.take_along_axis(all_pos, top, 1)

    def _add_to_gpu(self) -> None:
        import faiss

        if self._gpu_flat is None:
            self._gpu_res = faiss.StandardGpuResources()
            self._gpu_flat = faiss.GpuIndexFlatIP(self._gpu_res, self.store.dim)
        for _, rows in self.store.chunks(self._gpu_size):
            self._gpu_flat.add(rows)
        self._gpu_size = len(self.store)

    def _release_gpu(self) -> None:
        self._gpu_flat = self._gpu_res = None
        self._gpu_size = 0

    def _build_ann(self, train_size: int) -> None:
        import faiss

        cfg, d = self.config, self.store.dim
        if cfg.approximate_kind == "hnsw":
            self.ann = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.ann.hnsw.efConstruction = cfg.hnsw_ef_construction
            self.ann.hnsw.efSearch = cfg.hnsw_ef_search
        else:
            wanted = round(train_size ** 0.5) if cfg.ivf_nlist == "sqrt" else cfg.ivf_nlist
            nlist = min(wanted, max(1, train_size // 39))
            quantizer = faiss.IndexFlatIP(d)
            if cfg.ivf_encoding == "sq8":
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                )
            elif cfg.ivf_encoding == "pq4":
                index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, pq_subquantizers(d, 2 * cfg.ivf_pq_bytes, even=True),
                                                 4, faiss.METRIC_INNER_PRODUCT)
            elif cfg.ivf_encoding == "pq":
                index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_subquantizers(d, cfg.ivf_pq_bytes), 8,
                                         faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = cfg.ivf_train_points_per_list
            index.cp.niter = 10
            index.train(self.store.sample(nlist * cfg.ivf_train_points_per_list, train_size))
            index.nprobe = min(cfg.ivf_nprobe, nlist)
            self.ann = index
        self._trained_at = train_size
        logger.info("dedup: built %s index over %d kept vectors", cfg.approximate_kind, len(self.store))
        self._ann_size = 0
        self._add_to_ann(0)

    def _add_to_ann(self, start: int) -> None:
        if self.config.approximate_kind == "hnsw":
            # One at a time: faiss reorders a multi-vector add by level, which would make the
            # graph depend on how the pool was split into adds.
            with _single_thread():
                for _, rows in self.store.chunks(start):
                    for i in range(len(rows)):
                        self.ann.add(rows[i : i + 1])
        else:
            for _, rows in self.store.chunks(start):
                self.ann.add(rows)
        self._ann_size = len(self.store)


def pq_subquantizers(dim: int, wanted: int, even: bool = False) -> int:
    """The largest divisor of ``dim`` not above ``wanted`` (even, for 4-bit fast-scan codes,
    which pack two to a byte): faiss's PQ splits a vector into that many equal sub-vectors."""
    fits = [m for m in range(1, min(dim, wanted) + 1) if dim % m == 0 and (not even or m % 2 == 0)]
    return max(fits) if fits else 1
