"""The run's dedup actors: the deciding actor, and the parts of the pool (``dedup.shards`` > 1),
as named Ray actors, and their proxies.

The deciding actor (:class:`DeciderActor`) holds the run's ``SemanticDedup``; the
``semantic_dedup`` stage of every window calls it through :class:`DeciderProxy`, so the pool
is built once per run, not once per window's workers. ``ShardPool`` (``operators.dedup.shard``)
knows nothing of Ray. Here each part is wrapped in an
actor created once per run on the driver (named, ``get_if_exists``), declaring the memory its
part needs at ``dedup.pool_size``. The deciding actor gets ``ShardProxy`` objects (the
same interface as ``operators.dedup.sharded.LocalShard``) inside the operator, as the API stage
gets its limiter. The parts are owned by the driver, so they outlive a crash of the deciding
worker: its replacement rebuilds from the decision log and only tops the parts up. A part whose
own worker dies restarts empty; the decider sees the loss (an error, or fewer vectors than it
sent) and refills it from the log.

Calls from the decider to one actor run in the order they were sent, so a batch's inserts
(sent without waiting) always land before the next batch's searches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from operators.dedup.config import DedupConfig
from operators.dedup.memory import decider_memory_bytes, shard_memory_bytes
from operators.dedup.shard import NONE, ShardPool
from operators.dedup.sharded import NearestResult, ShardLost
from ray_jobs.config import ConfigError, PipelineConfig
from ray_jobs.services import NAMESPACE, new_run_id

logger = logging.getLogger(__name__)

GIB = 2**30


class ShardActor:
    """One part of the pool in its own worker (created empty; sized by its first insert)."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self.pool: ShardPool | None = None

    def nearest(self, x: np.ndarray) -> NearestResult:
        if self.pool is None:
            return np.full(len(x), -np.inf), np.full(len(x), NONE, dtype=np.int64), [None] * len(x), 0
        sims, ranks, ids = self.pool.nearest(x)
        return sims, ranks, ids, len(self.pool)

    def add(self, ids: Sequence[str], ranks: np.ndarray, vectors: np.ndarray) -> int:
        if self.pool is None:
            self.pool = ShardPool(self.config, vectors.shape[1])
        self.pool.add(ids, ranks, vectors)
        return len(self.pool)

    def last_rank(self) -> int:
        return NONE if self.pool is None else self.pool.last_rank()


class ShardProxy:
    """What the deciding worker calls: a part's actor, through ``ShardBackend``'s methods."""

    def __init__(self, actor: Any, index: int) -> None:
        self.actor, self.index = actor, index

    def submit_nearest(self, x: np.ndarray) -> Callable[[], NearestResult]:
        ref = self.actor.nearest.remote(x)
        return lambda: self._get(ref)

    def add(self, ids: Sequence[str], ranks: np.ndarray, vectors: np.ndarray) -> None:
        # Not awaited: a failed insert shows as a size mismatch at the next search.
        self.actor.add.remote(ids if hasattr(ids, "take") else list(ids), ranks, vectors)

    def last_rank(self) -> int:
        return self._get(self.actor.last_rank.remote())

    def _get(self, ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            raise ShardLost(f"dedup shard {self.index} died: {exc}") from exc


def shard_actor_options(config: DedupConfig, name: str) -> dict[str, Any]:
    options = {"name": name, "namespace": NAMESPACE, "get_if_exists": True,
               "num_cpus": config.shard_num_cpus, "memory": shard_memory_bytes(config),
               # Restart a dead part (empty; the decider refills it) but never re-run a call on
               # the new one: the decider must see that the part lost its vectors.
               "max_restarts": -1, "max_task_retries": 0}
    if config.use_gpu is True:
        options["num_gpus"] = 0.25
    return options


def start_dedup_shards(config: PipelineConfig, run_id: str | None = None) -> list[ShardProxy] | None:
    """The run's part actors when ``dedup.shards`` > 1 (Ray must be up); None otherwise.
    Keep the list (the operator holds it) for the whole run: the actors end with the driver."""
    dedup = config.dedup
    if not config.steps.dedup or not dedup.enabled or dedup.shards == 1:
        return None
    import ray

    run_id = run_id or new_run_id()
    proxies = []
    for i in range(dedup.shards):
        name = f"sg4v-dedup-shard-{run_id}-{i}"
        actor = ray.remote(ShardActor).options(**shard_actor_options(dedup, name)).remote(dedup)
        proxies.append(ShardProxy(actor, i))
    logger.info("dedup: %d part actors of %.1f GiB each", dedup.shards, shard_memory_bytes(dedup) / GIB)
    return proxies


def stop_dedup_shards(proxies: list[ShardProxy] | None) -> None:
    """End the part actors once the run is done (a driver that goes on, as in tests or a
    notebook, would otherwise keep their CPUs and memory reserved)."""
    if not proxies:
        return
    import ray

    for proxy in proxies:
        ray.kill(proxy.actor)


class DeciderActor:
    """The run's deciding dedup worker: a :class:`SemanticDedup` built once per run (its pool,
    or its view of the parts, rebuilt from the decision log when it starts), called by the
    ``semantic_dedup`` stage of every window in arrival order."""

    def __init__(self, config: DedupConfig, output: str, shards: list[ShardProxy] | None) -> None:
        from functools import partial

        from operators.dataset.resume import dedup_resume_state
        from operators.dedup.operator import SemanticDedup

        self.op = SemanticDedup(config, resume=partial(dedup_resume_state, output), output=output,
                                shards=shards)
        self.op.setup()

    def decide(self, ids: list[str], vectors: np.ndarray) -> list:
        return self.op.decide(ids, vectors)

    def take_ranks(self, n: int) -> list[int]:
        return self.op.take_ranks(n)


class DeciderProxy:
    """What the ``semantic_dedup`` stage calls: the deciding actor, as ``decide`` and
    ``take_ranks``. A call cut short by the actor's death is retried by Ray on its restarted
    replacement (the log gives the batch's logged decisions back, so nothing is decided twice)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def decide(self, ids: list[str], vectors: np.ndarray) -> list:
        import ray

        return ray.get(self.actor.decide.remote(ids, vectors))

    def take_ranks(self, n: int) -> list[int]:
        import ray

        return ray.get(self.actor.take_ranks.remote(n))


def decider_actor_options(config: DedupConfig, name: str) -> dict[str, Any]:
    from operators.dedup.operator import decider_resources

    res = decider_resources(config)
    options = {"name": name, "namespace": NAMESPACE, "get_if_exists": True, "num_cpus": res["num_cpus"],
               "max_concurrency": 1, "max_restarts": -1, "max_task_retries": 3}
    if res["memory_bytes"]:
        options["memory"] = res["memory_bytes"]
    if res["num_gpus"]:
        options["num_gpus"] = res["num_gpus"]
    return options


def start_dedup_decider(config: PipelineConfig, run_id: str, shards: list[ShardProxy] | None) -> DeciderProxy | None:
    """The run's deciding actor when the run has the dedup step (Ray must be up); None
    otherwise. Owned by the job's driver, so it lasts the whole run, through every window; a
    window's process gets the same actor by name."""
    if not config.steps.dedup:
        return None
    import ray

    name = f"sg4v-dedup-decider-{run_id}"
    actor = ray.remote(DeciderActor).options(**decider_actor_options(config.dedup, name))
    return DeciderProxy(actor.remote(config.dedup, config.output, shards))


def stop_dedup_actors(shards: list[ShardProxy] | None, decider: DeciderProxy | None) -> None:
    """End the deciding and part actors once the run is done (a driver that goes on, as in
    tests or a notebook, would otherwise keep their CPUs and memory reserved)."""
    import ray

    if decider is not None:
        ray.kill(decider.actor)
    stop_dedup_shards(shards)


def dedup_actor_cpus(config: PipelineConfig) -> float:
    """CPUs the run's dedup actors (the decider, and the parts) hold for the whole run (not
    available to the stages)."""
    if not config.steps.dedup:
        return 0.0
    from operators.dedup.operator import decider_resources

    return decider_resources(config.dedup)["num_cpus"] + shard_cpus(config)


def shard_cpus(config: PipelineConfig) -> float:
    """CPUs the part actors hold for the whole run (not available to the stages)."""
    dedup = config.dedup
    if not config.steps.dedup or not dedup.enabled or dedup.shards == 1:
        return 0.0
    return dedup.shards * dedup.shard_num_cpus


def memory_problems(config: PipelineConfig, node_memory: Sequence[float]) -> list[str]:
    """Why the dedup workers cannot be placed on nodes with ``node_memory`` bytes (Ray's
    ``memory`` resource of each node) at the configured pool size; empty when they can."""
    dedup = config.dedup
    if not config.steps.dedup or not dedup.enabled or not node_memory:
        return []
    largest = max(node_memory)
    wanted = [("the deciding dedup worker", decider_memory_bytes(dedup))]
    if dedup.shards > 1:
        wanted.append(("each dedup part", shard_memory_bytes(dedup)))
    problems = []
    for who, need in wanted:
        if need > largest:
            hint = "raise dedup.shards" if dedup.shards > 1 or who != "each dedup part" else ""
            problems.append(
                f"{who} needs {need / GIB:.1f} GiB for dedup.pool_size={dedup.pool_size:,} "
                f"(dedup.shards={dedup.shards}, mode {dedup.mode}) but the largest node offers "
                f"{largest / GIB:.1f} GiB; lower dedup.pool_size{', ' + hint if hint else ''}, "
                "use more dedup.shards, or add larger nodes")
    return problems


def check_dedup_memory(config: PipelineConfig, on_cluster: bool) -> None:
    """Fail before any work when the configured pool cannot fit any node (a warning on a
    cluster, whose autoscaler may still add a larger node)."""
    import ray

    nodes = [n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")]
    problems = memory_problems(config, nodes)
    if not problems:
        return
    if on_cluster:
        for problem in problems:
            logger.warning("%s (waiting for the autoscaler)", problem)
    else:
        raise ConfigError("; ".join(problems))
