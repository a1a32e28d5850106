"""``SemanticDedup``: the pipeline stage around ``GreedyDedupIndex`` (one deciding worker for
the run, optionally searching ``dedup.shards`` parts held by other workers)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.base import Batch, Operator, Resources, batch_size_of, object_column, reject
from operators.dedup.config import DedupConfig
from operators.dedup.decision_log import DecisionLog, LoggedIds, kept_chunks
from operators.dedup.index import Decision, GreedyDedupIndex
from operators.dedup.memory import decider_memory_bytes
from operators.dedup.sharded import LocalShard, ShardBackend, ShardedPool, ShardLost, replay

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
    ``dedup_*`` columns too.

    With ``output``, every batch's decisions are appended to ``OUTPUT/dedup_log/`` before the
    batch is returned, and ``setup()`` rebuilds the pool and the next rank from that log: a
    restarted worker or a rerun never decides a logged video again (it gets its logged
    decision back) and never gives a rank twice. ``resume`` (the state, or a function that
    loads it inside the worker) is for outputs written before the log existed: used only when
    the log is empty. ``shards`` are the parts of the pool when ``dedup.shards`` > 1 (Ray actor
    proxies from ``ray_jobs/dedup_shards.py``); without them the parts live in this worker.

    In a job (``remote_decider``), the deciding happens in one actor of the job's own
    (``ray_jobs/dedup_shards.py``, ``DeciderActor``, which holds an instance of this class):
    the stage's workers come and go with each window of the run, and the pool and the log's
    index stay where they are, built once per run.
    """

    name = "semantic_dedup"
    input_columns = ("video_id", "text_embedding")
    output_columns = ("dedup_rank", "dedup_similarity", "dedup_nearest_id")
    stateful = True
    #: The part actors of the pool (``dedup.shards`` > 1), and the run's deciding actor (the
    #: job's, see ``remote_decider``), bound by the runner.
    run_handles = ("shards", "decider")

    def __init__(
        self,
        config: DedupConfig | None = None,
        resources: Resources | None = None,
        resume: ResumeSource | None = None,
        output: str | None = None,
        shards: Sequence[ShardBackend] | None = None,
        remote_decider: bool = False,
    ) -> None:
        #: Decide in the run's deciding actor (bound as ``decider``: ``decide`` and
        #: ``take_ranks``, as this class has), which outlives the stage's workers; the stage
        #: then only checks and normalizes embeddings and writes the decisions into the batch.
        self.remote_decider = remote_decider
        super().__init__(config or DedupConfig(), resources)
        self._resume = resume
        self.output = output
        self.shards = shards
        self.decider: Any = None
        self.index: GreedyDedupIndex | None = None
        self._next_rank = 0
        self.log: DecisionLog | None = None
        self._logged: LoggedIds | None = None

    def default_resources(self) -> Resources:
        if self.remote_decider:
            # The deciding actor holds the CPU, memory and GPU share (decider_resources); the
            # stage's one worker passes batches to it in arrival order.
            return Resources(num_cpus=0.25, concurrency=(1, 1), batch_size=self.config.batch_size)
        return Resources(concurrency=(1, 1), batch_size=self.config.batch_size, **decider_resources(self.config))

    def setup(self) -> None:
        if self.remote_decider:
            return
        import faiss  # noqa: F401  (fail here, not on the first batch, when faiss is missing)

        if self.config.enabled and self.config.log and self.output is not None:
            self.log = DecisionLog(self.output, file_rows=self.config.log_file_rows)
            if self._rebuild_from_log():
                if self.config.log_file_rows:
                    self.log.compact()  # what an earlier run or worker left unmerged
                return
        state = self._resume() if callable(self._resume) else self._resume
        if state is None:
            return
        self._next_rank = state.next_rank
        vectors = np.asarray(state.vectors, dtype=np.float32)
        if self.config.enabled and len(state.ids):
            self.index = self._new_index(vectors.shape[1], state.next_rank)
            if isinstance(self.index.pool, ShardedPool):
                self.index.pool.start_restore()
            self.index.add_kept(list(state.ids), _normalized(vectors))
        logger.info("dedup: resumed with %d kept videos, next rank %d", len(state.ids), state.next_rank)

    def __call__(self, batch: Batch) -> Batch:
        n = batch_size_of(batch)
        ranks: list[Any] = [None] * n
        sims: list[Any] = [None] * n
        nearest: list[Any] = [None] * n
        rows, vectors = self._valid_embeddings(batch)
        decider = self.decider if self.remote_decider else self
        if decider is None:
            raise RuntimeError("semantic_dedup runs with remote_decider but no deciding actor was bound")
        if not self.config.enabled:
            for i, rank in zip(rows, decider.take_ranks(len(rows)), strict=True):
                ranks[i] = rank
        elif rows:
            ids = [str(batch["video_id"][i]) for i in rows]
            for i, decision in zip(rows, decider.decide(ids, vectors), strict=True):
                ranks[i], sims[i], nearest[i] = decision.rank, decision.similarity, decision.nearest_id
                if not decision.kept:
                    detail = {"nearest_id": decision.nearest_id, "similarity": decision.similarity}
                    reject(batch, i, self.name, "duplicate", detail=json.dumps(detail))
        batch["dedup_rank"] = object_column(ranks)
        batch["dedup_similarity"] = object_column(sims)
        batch["dedup_nearest_id"] = object_column(nearest)
        return batch

    def take_ranks(self, n: int) -> list[int]:
        """The next ``n`` ranks (dedup off: rows are only numbered in arrival order)."""
        start = self._next_rank
        self._next_rank += n
        return list(range(start, start + n))

    def decide(self, ids: list[str], vectors: np.ndarray) -> list[Decision]:
        """Decisions in row order: logged ones as logged, the others decided now (and logged
        before they count). ``vectors``: unit rows. Asking again for ids already decided
        gives the same decisions back, so a call may be retried."""
        logged = self._logged_decisions(ids)
        fresh = [j for j in range(len(ids)) if j not in logged]
        out: dict[int, Decision] = dict(logged)
        if fresh:
            fresh_ids = [ids[j] for j in fresh]
            index = self._index_for(vectors)
            try:
                decided = index.decide(fresh_ids, vectors[fresh], before_insert=self._logger_for(fresh_ids))
            except ShardLost as exc:
                # A part's worker restarted empty: refill the parts from the log, then decide.
                logger.warning("dedup: %s; rebuilding the parts from the decision log", exc)
                if not self._rebuild_from_log():
                    raise
                decided = self._index_for(vectors).decide(fresh_ids, vectors[fresh],
                                                          before_insert=self._logger_for(fresh_ids))
            out.update(zip(fresh, decided, strict=True))
        return [out[j] for j in range(len(ids))]

    def _logged_decisions(self, ids: list[str]) -> dict[int, Decision]:
        if self._logged is None or self.log is None:
            return {}
        found = self._logged.find(ids)
        hits = np.flatnonzero(found >= 0)
        if not len(hits):
            return {}
        at = self.log.decisions_at(found[hits])
        out = {}
        for j in hits:
            d = at.get(int(found[j]))
            if d is not None and d.video_id == ids[j]:  # else a hash collision: not logged
                out[int(j)] = Decision(d.kept, d.rank, d.nearest_id, d.similarity)
        if out:
            logger.info("dedup: %d video(s) already decided in the log get their logged decision", len(out))
        return out

    def _logger_for(self, ids: list[str]):
        if self.log is None:
            return None
        log = self.log

        def append(decisions: list[Decision], vectors: np.ndarray) -> None:
            log.append(ids, [d.rank for d in decisions], [d.kept for d in decisions],
                       [d.nearest_id for d in decisions], [d.similarity for d in decisions], vectors)
        return append

    def _rebuild_from_log(self) -> bool:
        """Rebuild the pool, the next rank and the logged ids from the log; False if it is empty."""
        dim = self.log.dim()
        if dim is None:
            return False
        self.index = self._new_index(dim, 0)
        seen: dict = {}
        kept = replay(self.index.pool, kept_chunks(self.log, seen))
        ranks = np.concatenate(seen["ranks"]) if seen["ranks"] else np.zeros(0, dtype=np.int64)
        self._logged = LoggedIds(np.concatenate(seen["hashes"]), ranks)
        self._next_rank = self.index.next_rank = int(ranks.max()) + 1
        logger.info("dedup: rebuilt from the decision log: %d decisions, %d kept, next rank %d",
                    len(ranks), kept, self._next_rank)
        return True

    def _new_index(self, dim: int, start_rank: int) -> GreedyDedupIndex:
        if self.config.shards == 1:
            return GreedyDedupIndex(self.config, dim, start_rank=start_rank)
        backends = self.shards or [LocalShard(self.config, dim) for _ in range(self.config.shards)]
        if len(backends) != self.config.shards:
            raise ValueError(f"dedup.shards is {self.config.shards} but {len(backends)} parts were given")
        pool = ShardedPool(self.config, dim, backends, centroids=self.log)
        return GreedyDedupIndex(self.config, dim, start_rank=start_rank, pool=pool)

    def _index_for(self, vectors: np.ndarray) -> GreedyDedupIndex:
        if self.index is None:
            self.index = self._new_index(vectors.shape[1], self._next_rank)
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


def decider_resources(config: DedupConfig) -> dict[str, Any]:
    """What the deciding worker reserves: one CPU (the greedy rule is sequential; faiss uses the
    node's cores beyond it), the memory of its part of the pool, and a GPU share only when asked
    for (Ray hides GPUs otherwise)."""
    gpus = 0.25 if config.use_gpu is True and config.shards == 1 else 0.0
    return {"num_cpus": 1.0, "num_gpus": gpus,
            "memory_bytes": decider_memory_bytes(config) if config.enabled else None}


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    return (vectors / norms).astype(np.float32)
