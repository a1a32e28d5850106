"""``SemanticDedup``: the pipeline stage around ``GreedyDedupIndex`` (one worker for the run)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.base import Batch, Operator, Resources, batch_size_of, object_column, reject
from operators.dedup.config import DedupConfig
from operators.dedup.index import GreedyDedupIndex

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class ResumeState:
    """What a resumed run already kept: the kept rows' ids and caption embeddings, and the
    rank to continue from (one past the largest ``dedup_rank`` already written)."""

    ids: Sequence[str]
    vectors: np.ndarray
    next_rank: int = 0


ResumeSource = ResumeState | Callable[[], ResumeState | None]


class SemanticDedup(Operator):
    """Keep a video only if its caption embedding is not too close to any video kept before.

    Runs as a single stateful worker, so the order rows reach it is the order they are decided
    in; ``dedup_rank`` records it. Dropped rows are rejected with reason ``duplicate`` and the
    nearest kept ``video_id`` and similarity in the detail (JSON), and keep the three
    ``dedup_*`` columns too. Pass ``resume`` (the state, or a function that loads it inside the
    worker) to rebuild the pool from the kept rows of an earlier, interrupted run.
    """

    name = "semantic_dedup"
    input_columns = ("video_id", "text_embedding")
    output_columns = ("dedup_rank", "dedup_similarity", "dedup_nearest_id")
    stateful = True

    def __init__(
        self,
        config: DedupConfig | None = None,
        resources: Resources | None = None,
        resume: ResumeSource | None = None,
    ) -> None:
        super().__init__(config or DedupConfig(), resources)
        self._resume = resume
        self.index: GreedyDedupIndex | None = None
        self._next_rank = 0

    def default_resources(self) -> Resources:
        # One worker: the greedy rule is sequential. faiss uses the node's cores beyond this
        # reservation; a GPU share is reserved only when asked for, as Ray hides GPUs otherwise.
        gpus = 0.25 if self.config.use_gpu is True else 0.0
        return Resources(num_cpus=1.0, num_gpus=gpus, concurrency=(1, 1), batch_size=self.config.batch_size)

    def setup(self) -> None:
        import faiss  # noqa: F401  (fail here, not on the first batch, when faiss is missing)

        state = self._resume() if callable(self._resume) else self._resume
        if state is None:
            return
        self._next_rank = state.next_rank
        vectors = np.asarray(state.vectors, dtype=np.float32)
        if self.config.enabled and len(state.ids):
            self.index = GreedyDedupIndex(self.config, vectors.shape[1], start_rank=state.next_rank)
            self.index.add_kept(list(state.ids), _normalized(vectors))
        logger.info("dedup: resumed with %d kept videos, next rank %d", len(state.ids), state.next_rank)

    def __call__(self, batch: Batch) -> Batch:
        n = batch_size_of(batch)
        ranks: list[Any] = [None] * n
        sims: list[Any] = [None] * n
        nearest: list[Any] = [None] * n
        rows, vectors = self._valid_embeddings(batch)
        if not self.config.enabled:
            for i in rows:
                ranks[i], self._next_rank = self._next_rank, self._next_rank + 1
        elif rows:
            ids = [str(batch["video_id"][i]) for i in rows]
            for i, decision in zip(rows, self._index_for(vectors).decide(ids, vectors), strict=True):
                ranks[i], sims[i], nearest[i] = decision.rank, decision.similarity, decision.nearest_id
                if not decision.kept:
                    detail = {"nearest_id": decision.nearest_id, "similarity": decision.similarity}
                    reject(batch, i, self.name, "duplicate", detail=json.dumps(detail))
        batch["dedup_rank"] = object_column(ranks)
        batch["dedup_similarity"] = object_column(sims)
        batch["dedup_nearest_id"] = object_column(nearest)
        return batch

    def _index_for(self, vectors: np.ndarray) -> GreedyDedupIndex:
        if self.index is None:
            self.index = GreedyDedupIndex(self.config, vectors.shape[1], start_rank=self._next_rank)
        elif vectors.shape[1] != self.index.dim:
            raise ValueError(
                f"text_embedding has dimension {vectors.shape[1]}, the dedup pool {self.index.dim}: "
                "was the text embedder changed between runs?"
            )
        return self.index

    def _valid_embeddings(self, batch: Batch) -> tuple[list[int], np.ndarray]:
        """Rows with a usable embedding and their unit vectors; the others are rejected."""
        column = batch["text_embedding"]
        rows: list[int] = []
        vectors: list[np.ndarray] = []
        for i in range(batch_size_of(batch)):
            value = column[i]
            vector = None if value is None else np.asarray(value, dtype=np.float32).ravel()
            if vector is None or vector.size == 0 or not np.all(np.isfinite(vector)) or not vector.any():
                reject(batch, i, self.name, "invalid_embedding", detail="missing, empty, zero or not finite")
                continue
            rows.append(i)
            vectors.append(vector)
        if not rows:
            return rows, np.zeros((0, 0), dtype=np.float32)
        if len({v.size for v in vectors}) > 1:
            raise ValueError("text_embedding vectors of different dimensions in one batch")
        return rows, _normalized(np.stack(vectors))


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    return (vectors / norms).astype(np.float32)
