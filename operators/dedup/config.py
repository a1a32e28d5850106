"""Configuration of the incremental semantic dedup stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from operators.config import StrictModel


class DedupConfig(StrictModel):
    """Greedy semantic dedup over caption embeddings (step 2 of the ShareGPT4Video method).

    In arrival order, a video is kept only if its highest cosine similarity to the videos
    already kept is below ``threshold``.
    """

    enabled: bool = Field(True, description="Run semantic dedup; when false every row is kept.")
    threshold: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description=(
            "A video is dropped when its highest cosine similarity to an already-kept video is at "
            "least this value. The paper publishes no value. Raw BERT [CLS] vectors are "
            "anisotropic: unrelated captions from one captioner often score 0.8-0.9, so 0.95 is "
            "a conservative default. Calibrate it on a sample of your own captions using the "
            "similarities recorded in rejected/."
        ),
    )
    mode: Literal["exact", "approximate"] = Field(
        "exact",
        description=(
            "exact: brute-force inner product over every kept vector (flat index; on GPU when "
            "used). approximate: an IVF or HNSW index once the pool is large, for CPU-only pools "
            "of millions."
        ),
    )
    approximate_kind: Literal["ivf", "hnsw"] = Field(
        "ivf", description="Index used by approximate mode once the pool reaches approximate_min_pool."
    )
    approximate_min_pool: int = Field(
        50_000,
        ge=1,
        description=(
            "Approximate mode searches exactly until the pool holds this many kept vectors, then "
            "builds the approximate index from the stored kept vectors."
        ),
    )
    rescore_k: int | None = Field(
        None,
        ge=1,
        le=1024,
        description=(
            "Nearest candidates taken from the index per video; their similarity is recomputed "
            "exactly (float64) from the stored vectors and the best one decides. null: 16 for "
            "ivf_encoding pq and pq4 (product quantization ranks candidates coarsely), 4 otherwise."
        ),
    )
    ivf_nlist: int | Literal["sqrt"] = Field(
        "sqrt",
        description="IVF: number of inverted lists (k-means centroids). sqrt: about the square "
        "root of the vectors it is trained on, so it grows with the pool at each retrain "
        "(ivf_retrain_growth); the search cost then grows with sqrt(pool), not with the pool.",
    )
    ivf_nprobe: int = Field(
        8,
        ge=1,
        description="IVF: lists scanned per query; more is slower and more exact. Near-duplicates "
        "sit in the same or a neighbouring list, so 8 of 1024 agreed with exact mode on every "
        "decision in bench/dedup.py (rescoring makes each similarity exact).",
    )
    ivf_encoding: Literal["sq8", "pq", "pq4", "flat"] = Field(
        "pq4",
        description=(
            "IVF: how vectors are stored in the lists. pq4 (ivf_pq_bytes a vector, 4-bit codes "
            "scanned with SIMD, faiss's fast-scan IVF-PQ) is the fastest to search: 7,368 queries "
            "per CPU-second at 1M vectors, every keep/drop decision as exact search's, in "
            "bench/dedup.py. pq (8-bit codes) is 2.5x slower, sq8 (1 byte a dimension) 12x "
            "slower and larger, flat exact but 4 bytes a dimension. The candidates are rescored "
            "exactly from the stored vectors (rescore_k), so each recorded similarity is a true "
            "one; a compressed code only decides which candidates are rescored."
        ),
    )
    ivf_pq_bytes: int = Field(
        64,
        ge=1,
        description="IVF with pq or pq4: bytes a vector. pq: that many 8-bit sub-quantizers, pq4: "
        "twice as many 4-bit ones; the largest divisor of the embedding size not above the "
        "count is used (64 sub-quantizers for pq at 768-d and 384-d, 128 for pq4 at 768-d and 384-d).",
    )
    ivf_train_points_per_list: int = Field(
        64, ge=39, description="IVF: training sample size per list (taken evenly from the pool)."
    )
    ivf_retrain_growth: float | None = Field(
        4.0,
        gt=1.0,
        description=(
            "IVF: retrain the centroids each time the pool reaches approximate_min_pool x growth^k "
            "(on the first that many kept vectors), so they follow drift in the data; null trains once."
        ),
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW: neighbours per node.")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW: candidate list size while adding.")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW: candidate list size while searching.")
    use_gpu: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "Hold the flat (exact) index on GPU 0: auto when faiss sees a GPU. Approximate indexes "
            "stay on CPU; on a GPU exact search of millions of vectors is already fast."
        ),
    )
    batch_size: int = Field(
        256, ge=1, description="Rows per call to the single deciding worker; also the rows of one "
        "decision-log file (dedup_log/), so larger batches mean fewer files.")
    log: bool = Field(
        True, description="Append every decision (id, rank, kept, nearest id, similarity, vector) to "
        "OUTPUT/dedup_log/ before the batch moves on; a restarted worker and a rerun rebuild the pool "
        "from it and never decide a logged video twice. Off only for throwaway runs.")
    log_file_rows: int = Field(
        50_000, ge=0, description="Decisions per log file once compacted: each batch is written as a "
        "file of its own (durable before the batch moves on), and once the small files add up to "
        "this many decisions they are merged into one (~150 MB at 768-d), so a 50M-video run "
        "leaves ~1,000 log files instead of ~200,000. 0: never merge.")
    shards: int = Field(
        1, ge=1, description="Parts the pool is split into by coarse centroid, each searched by its "
        "own worker (a Ray actor). 1: the deciding worker holds the whole pool (exact greedy rule).")
    probe_shards: int = Field(
        2, ge=1, description="Parts searched per video: those with the nearest centroids. A "
        "near-duplicate across a part boundary is found when its part is among them; equal to "
        "shards (with exact search) gives the exact greedy rule. Capped at shards.")
    probe_margin: float = Field(
        1.0, ge=0.0, description="Also search every further part whose centroid is nearly as near as "
        "the video's own part's, in standard deviations of a near-duplicate's offset across the "
        "boundary (r / sqrt(d_eff): r the distance of a cosine at threshold, d_eff the directions the "
        "first kept vectors spread over). 0 searches exactly probe_shards parts; sqrt(dimension) or "
        "more is the worst-case bound, which misses no near-duplicate behind a boundary (with exact "
        "search) but searches nearly every part. Measured at 1M, 16 parts: docs/performance.md.")
    train_size: int = Field(
        50_000, ge=2, description="Kept videos the part centroids are trained on (the first ones "
        "kept). Until then the deciding worker holds the pool; the centroids are saved in "
        "dedup_log/ so restarts and reruns split the pool the same way.")
    pool_size: int = Field(
        200_000, ge=1, description="Kept videos the pool is sized for: the dedup workers declare "
        "the memory that many vectors need (per part: pool_size / shards x 1.5 for uneven parts), so "
        "Ray places them on nodes that have it, and the run fails before starting when no node does. "
        "About 3.7 KB a vector at 768-d exact (0.8 GB at the default); set it to the kept videos you "
        "expect.")
    embedding_dim: int = Field(
        768, ge=1, description="Dimension of the caption embeddings, used only to size the declared "
        "memory (the pool takes its dimension from the vectors).")
    shard_num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved by each part's worker.")

    @property
    def candidates(self) -> int:
        """``rescore_k``, or its default for the encoding."""
        if self.rescore_k is not None:
            return self.rescore_k
        return 16 if self.approximate_kind == "ivf" and self.ivf_encoding in ("pq", "pq4") else 4

    @model_validator(mode="after")
    def _nprobe_within_nlist(self) -> DedupConfig:
        if isinstance(self.ivf_nlist, int) and self.ivf_nlist < 1:
            raise ValueError("ivf_nlist must be at least 1 (or sqrt)")
        if isinstance(self.ivf_nlist, int) and self.ivf_nprobe > self.ivf_nlist:
            raise ValueError(f"ivf_nprobe ({self.ivf_nprobe}) exceeds ivf_nlist ({self.ivf_nlist})")
        return self
