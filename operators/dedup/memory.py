"""Memory the dedup workers declare, from the configured pool size.

Per kept vector: the float32 vector (4 x dim), its rank (8) and id (~40 in Arrow), plus what
the index keeps beside it: nothing for exact search (it scans the stored vectors in place),
dim + 8 for IVF-SQ8, ivf_pq_bytes + 8 for IVF-PQ (8- or 4-bit), 4 x dim + 8 for IVF-flat, about 4 x dim + 16 x M for HNSW. Measured at
768-d (bench/dedup.py): 3,173-3,444 bytes exact, 4,122-4,593 IVF-SQ8, 6,762-7,202 HNSW; the
20% margin covers the growth steps of faiss's lists and the store's last, partly filled chunk.
"""

from __future__ import annotations

from operators.dedup.config import DedupConfig
from operators.dedup.search import pq_subquantizers

#: The worker process itself: Python, faiss, Arrow, one log file being read.
PROCESS_BYTES = 512 * 2**20
#: Logged decisions per kept video assumed for the id lookup (16 bytes a decision).
DECISIONS_PER_KEPT = 2
#: k-means parts are uneven: the fullest is sized at this many times the average.
PART_IMBALANCE = 1.5
MARGIN = 1.2


def bytes_per_vector(config: DedupConfig) -> int:
    d = config.embedding_dim
    extra = 0
    if config.mode == "approximate":
        if config.approximate_kind == "hnsw":
            extra = 4 * d + 16 * config.hnsw_m
        else:
            code = {"sq8": d, "pq": pq_subquantizers(d, config.ivf_pq_bytes),
                    "pq4": pq_subquantizers(d, 2 * config.ivf_pq_bytes, even=True) // 2, "flat": 4 * d}
            extra = code[config.ivf_encoding] + 8
    return int(MARGIN * (4 * d + 8 + 40 + extra))


def shard_vectors(config: DedupConfig) -> int:
    """Vectors one part is sized for."""
    return int(PART_IMBALANCE * config.pool_size / config.shards) + 1


def shard_memory_bytes(config: DedupConfig) -> int:
    return PROCESS_BYTES + shard_vectors(config) * bytes_per_vector(config)


def log_merge_bytes(config: DedupConfig) -> int:
    """A merge of the decision log's batch files: the files read, the merged table and its
    Parquet bytes, ``log_file_rows`` decisions each (the vector plus ~100 bytes of the rest)."""
    if not config.log or not config.log_file_rows:
        return 0
    return 3 * config.log_file_rows * (4 * config.embedding_dim + 100)


def decider_memory_bytes(config: DedupConfig) -> int:
    """The deciding worker: the whole pool with one part, else the first ``train_size`` kept
    vectors (held until the parts are trained); plus the logged-id lookup and a log merge."""
    held = config.pool_size if config.shards == 1 else min(config.train_size, config.pool_size)
    lookup = 16 * DECISIONS_PER_KEPT * config.pool_size if config.log else 0
    return PROCESS_BYTES + held * bytes_per_vector(config) + lookup + log_merge_bytes(config)
