"""The queued-blocks bound: the policy's rule on a fake topology, and a real Ray Data run in
which a fast stage feeds a slow one."""

import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from ray_jobs.backpressure import (
    MAX_BLOCKS_KEY,
    POLICIES_KEY,
    QueuedBlocksBackpressurePolicy,
    bound_queued_blocks,
    waiting_blocks,
)


@dataclass
class Queue:
    num_blocks: int = 0


@dataclass
class State:
    output_queue: Queue = field(default_factory=Queue)
    input_queues: list = field(default_factory=lambda: [Queue()])


@dataclass(eq=False)
class Op:
    active: int = 0
    output_dependencies: list = field(default_factory=list)

    def num_active_tasks(self) -> int:
        return self.active


def policy(limit: int | None, topology: dict):
    import ray.data

    context = ray.data.DataContext()
    context.set_config(MAX_BLOCKS_KEY, limit)
    return QueuedBlocksBackpressurePolicy(context, topology, None)


def two_stages(out_queue: int, in_queue: int, busy: int = 0):
    slow = Op(active=busy)
    fast = Op(output_dependencies=[slow])
    topology = {fast: State(output_queue=Queue(out_queue)), slow: State(input_queues=[Queue(in_queue)])}
    return fast, slow, topology


def test_a_stage_is_held_once_more_blocks_wait_than_the_bound():
    fast, _, topology = two_stages(out_queue=3, in_queue=5)
    assert waiting_blocks(topology, fast) == 8
    assert policy(8, topology).can_add_input(fast)
    assert not policy(7, topology).can_add_input(fast)
    assert policy(None, topology).can_add_input(fast)


def test_a_busy_stage_downstream_raises_the_bound():
    fast, _, topology = two_stages(out_queue=0, in_queue=20, busy=6)
    assert policy(8, topology).can_add_input(fast)  # 20 <= 8 + 2 x 6
    fast, _, topology = two_stages(out_queue=0, in_queue=21, busy=6)
    assert not policy(8, topology).can_add_input(fast)


def test_the_policy_is_added_once_beside_ray_datas_own():
    import ray.data
    from ray.data._internal.execution.backpressure_policy import ENABLED_BACKPRESSURE_POLICIES

    context = ray.data.DataContext()
    bound_queued_blocks(context, 16)
    bound_queued_blocks(context, 32)
    policies = context.get_config(POLICIES_KEY)
    assert policies == [*ENABLED_BACKPRESSURE_POLICIES, QueuedBlocksBackpressurePolicy]
    assert context.get_config(MAX_BLOCKS_KEY) == 32


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def stamp(column: str):
    def fn(batch):
        batch[column] = np.full(len(batch["id"]), time.time())
        return batch

    return fn


def slow_stamp(batch):
    time.sleep(0.02)
    return stamp("consumed")(batch)


def most_waiting(limit: int | None, blocks: int = 200) -> int:
    """The most blocks a fast first stage had produced that a slow second stage (one task at
    a time) had not yet started on, read off the times each stamped in its rows."""
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = {key: context.get_config(key) for key in (POLICIES_KEY, MAX_BLOCKS_KEY)}
    if limit:
        bound_queued_blocks(context, limit)
    try:
        ds = ray.data.range(blocks, override_num_blocks=blocks)
        ds = ds.map_batches(stamp("produced"), batch_size=None, num_cpus=0.5)
        ds = ds.map_batches(slow_stamp, batch_size=None, num_cpus=1,
                            compute=ray.data.TaskPoolStrategy(size=1))
        rows = ds.take_all()
    finally:  # the process's context as it was: later tests run Ray Data in this process
        for key, value in saved.items():
            if value is None:
                context.remove_config(key)
            else:
                context.set_config(key, value)
    assert len(rows) == blocks
    produced = np.sort([r["produced"] for r in rows])
    consumed = np.sort([r["consumed"] for r in rows])
    # At each start of the slow stage: blocks produced by then minus blocks started before it.
    return int(max(np.searchsorted(produced, t, side="right") - i for i, t in enumerate(consumed)))


def test_a_fast_stage_stays_within_the_bound_of_a_slow_one(local_ray):
    unbounded = most_waiting(None)
    bounded = most_waiting(8)
    # 8 waiting + 2 x the one busy task downstream, + the fast stage's own tasks in flight.
    assert bounded <= 8 + 2 + 4, bounded
    assert unbounded > 3 * bounded, (unbounded, bounded)
