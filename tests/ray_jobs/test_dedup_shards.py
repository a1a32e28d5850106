"""The dedup part actors' class and the memory check, without starting Ray."""

import numpy as np

from operators.dedup.memory import decider_memory_bytes, shard_memory_bytes
from ray_jobs.config import load_config
from ray_jobs.dedup_shards import ShardActor, memory_problems, shard_actor_options, shard_cpus
from tests.operators.dedup.synthetic import random_unit


def config(**dedup):
    return load_config({"input": {"kind": "folder", "path": "/tmp"}, "output": "/tmp/out", "dedup": dedup})


def test_the_pool_that_cannot_fit_any_node_is_named():
    big = config(pool_size=50_000_000)
    problems = memory_problems(big, [64 * 2**30, 128 * 2**30])
    assert len(problems) == 1 and "dedup.pool_size=50,000,000" in problems[0] and "dedup.shards" in problems[0]
    sharded = config(pool_size=50_000_000, shards=16)
    assert memory_problems(sharded, [128 * 2**30]) == []
    too_few = config(pool_size=50_000_000, shards=2)
    assert any("each dedup part" in p for p in memory_problems(too_few, [128 * 2**30]))
    assert memory_problems(config(enabled=False, pool_size=50_000_000), [2**30]) == []


def test_part_actors_declare_their_memory_and_cpus():
    cfg = config(pool_size=1_000_000, shards=4, shard_num_cpus=0.5)
    options = shard_actor_options(cfg.dedup, "part-0")
    assert options["memory"] == shard_memory_bytes(cfg.dedup) < decider_memory_bytes(config(pool_size=1_000_000).dedup)
    assert options["max_task_retries"] == 0 and options["num_cpus"] == 0.5
    assert shard_cpus(cfg) == 2.0 and shard_cpus(config()) == 0.0


def test_part_actor_class_answers_like_a_local_part():
    part = ShardActor(config(shards=2).dedup)
    x = random_unit(5, 8, np.random.default_rng(0))
    sims, ranks, ids, size = part.nearest(x)
    assert size == 0 and list(ranks) == [-1] * 5 and part.last_rank() == -1
    assert part.add(["a", "b"], np.array([3, 7]), x[:2]) == 2
    sims, ranks, ids, size = part.nearest(x[:2])
    assert size == 2 and list(ranks) == [3, 7] and ids == ["a", "b"] and part.last_rank() == 7
