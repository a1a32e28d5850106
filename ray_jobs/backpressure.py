"""A bound on how many blocks wait between two stages, on top of Ray Data's own policies.

Ray Data holds a stage back when the bytes waiting for the next stage fill its share of the
object store. Rows a cheap stage rejects are a few hundred bytes each, so a block of them is
~100 KiB and the byte budget never binds: the first stages ran over the whole input before the
rest caught up, and the driver, which owns every waiting block, kept its bookkeeping. Bounding
the waiting blocks by count took the driver's peak at 1M listed rows from 325 to 289 MiB
(docs/performance.md, "Control plane") without holding back a stage that has work to feed.
"""

from __future__ import annotations

from typing import Any

from ray.data._internal.execution.backpressure_policy import (
    ENABLED_BACKPRESSURE_POLICIES,
    BackpressurePolicy,
)

#: DataContext key of Ray Data's list of backpressure policies.
POLICIES_KEY = "backpressure_policies.enabled"
#: DataContext key of the bound (``ray.max_queued_blocks``).
MAX_BLOCKS_KEY = "sg4v.max_queued_blocks"


class QueuedBlocksBackpressurePolicy(BackpressurePolicy):
    """A stage gets no new input while more of its output blocks wait than
    ``sg4v.max_queued_blocks`` plus twice the tasks the stages it feeds are running (so a large
    pool downstream is never starved). It never stalls a run: when no stage has a task in
    flight, Ray Data runs one whatever the policies say."""

    @property
    def name(self) -> str:
        return "QueuedBlocks"

    def can_add_input(self, op: Any) -> bool:
        limit = self._data_context.get_config(MAX_BLOCKS_KEY)
        if not limit:
            return True
        busy = sum(d.num_active_tasks() for d in op.output_dependencies)
        return waiting_blocks(self._topology, op) <= limit + 2 * busy


def waiting_blocks(topology: Any, op: Any) -> int:
    """Blocks ``op`` produced that wait in its output queue or in the input queues of the
    stages it feeds. A stage's own buffer is not counted: a repartition into blocks of N rows
    must be able to gather N rows, however small the blocks that feed it."""
    waiting = topology[op].output_queue.num_blocks
    for downstream in op.output_dependencies:
        if downstream in topology:
            waiting += sum(q.num_blocks for q in topology[downstream].input_queues)
    return waiting


def bound_queued_blocks(context: Any, max_blocks: int | None) -> None:
    """Add the queued-blocks policy to ``context``'s backpressure policies (once) with this
    bound (None: no bound; the policy then lets every stage through)."""
    policies = [p for p in context.get_config(POLICIES_KEY) or ENABLED_BACKPRESSURE_POLICIES
                if p is not QueuedBlocksBackpressurePolicy]
    context.set_config(POLICIES_KEY, [*policies, QueuedBlocksBackpressurePolicy])
    context.set_config(MAX_BLOCKS_KEY, max_blocks)
