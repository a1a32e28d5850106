"""The one place where an operator becomes a Ray Data stage (``Dataset.map_batches``).

Stateless operators run as a task pool; operators with state (a model, a client, an index) or
GPUs run as an actor pool whose size the autoscaler moves between ``concurrency`` min and max.
The adapter also shields operators from rows an earlier stage rejected and records each
stage's wall time per row in a ``_t_<stage>`` column that the writer passes on to the stats.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from operators.base import (
    Batch,
    Operator,
    Resources,
    apply_to_live_rows,
    batch_size_of,
    live_mask,
    normalize_batch,
    object_column,
)
from operators.dataset.schema import SOURCE_BYTES

logger = logging.getLogger(__name__)


def resolve_resources(op: Operator, override: Any | None) -> Resources:
    """The operator's declared resources with the config's per-stage overrides applied."""
    res = op.resources
    if override is None:
        return res
    changes = {k: v for k, v in override.model_dump().items() if v is not None}
    return replace(res, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype != object else [_plain(v) for v in value]
    return value


def arrow_friendly(batch: Batch) -> Batch:
    """Arrays inside object columns become lists, so Ray stores them as Arrow lists.

    Left as numpy arrays, Ray turns them into tensor extension columns, which cannot be
    concatenated with a block where the column is all null (a batch of rejected rows).
    """
    for column, values in batch.items():
        if values.dtype == object and any(isinstance(v, np.ndarray) for v in values):
            batch[column] = object_column([_plain(v) for v in values])
    return batch


def nulls_restored(batch: Batch) -> Batch:
    """Columns that are all null again, as object columns of None.

    Ray hands an Arrow column of type ``null`` (every row of the block missing it, as when a
    whole block was rejected before the stage that fills it) to a numpy stage as float32 NaN.
    Passed on like that, the block's ``frame_timestamps`` (say) would be a float column, which
    no later block with real lists can be concatenated with: the writer's gather failed on it.
    No column of the dataset is a float32 scalar, so an all-NaN float32 column is always one
    of those.
    """
    for column, values in batch.items():
        if (isinstance(values, np.ndarray) and values.dtype == np.float32 and values.size
                and np.isnan(values).all()):
            batch[column] = object_column([None] * len(values))
    return batch


def run_operator(op: Operator, batch: Batch) -> Batch:
    """Call ``op`` on a batch the way the pipeline does: live rows only, timed."""
    start = time.perf_counter()
    batch = nulls_restored(batch)
    out = normalize_batch(op(batch)) if op.sees_rejected else apply_to_live_rows(op, batch)
    out = arrow_friendly(source_released(op, out))
    n = batch_size_of(out)
    if n and not op.sees_rejected:
        out[f"_t_{op.name}"] = np.full(n, (time.perf_counter() - start) / n)
    return out


def source_released(op: Operator, batch: Batch) -> Batch:
    """``source_bytes`` (a shard member's bytes, see :func:`operators.io.holding`) dropped from
    rejected rows, and from every row after the last stage that opens the video: a row holds
    its video's bytes only as long as a stage still needs them."""
    values = batch.get(SOURCE_BYTES)
    if values is None or all(v is None for v in values):  # plain files: nothing is held
        return batch
    n = len(values)
    if op.releases_source:
        batch[SOURCE_BYTES] = object_column([None] * n)
        return batch
    dead = ~live_mask(batch)
    if dead.any():
        values = np.array(values, dtype=object)
        values[dead] = None
        batch[SOURCE_BYTES] = values
    return batch


def run_in_chunks(op: Operator, batch: Batch, size: int) -> Iterator[Batch]:
    """``run_operator`` over a whole block, ``size`` rows at a time, in row order; runs of
    rejected rows (a block an earlier stage rejected whole, say) go on as one batch without a
    call per ``size`` rows. A task stage gets its whole block this way instead of Ray slicing
    it into batches: a slice costs a conversion of the batch to numpy and back, and a block of
    1,024 rejected rows cut into batches of 4 cost 256 of those per stage."""
    n = batch_size_of(batch)
    if op.sees_rejected or n <= size:
        yield run_operator(op, batch)
        return
    live = live_mask(nulls_restored(batch))
    dead_from = None
    for start in range(0, n, size):
        stop = min(n, start + size)
        if not live[start:stop].any():
            dead_from = start if dead_from is None else dead_from
            continue
        if dead_from is not None:
            yield run_operator(op, _rows(batch, dead_from, start))
            dead_from = None
        yield run_operator(op, _rows(batch, start, stop))
    if dead_from is not None:
        yield run_operator(op, _rows(batch, dead_from, n))


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    return {k: v[start:stop] for k, v in batch.items()}


def _task_fn(batch: Batch, op: Operator, batch_size: int) -> Iterator[Batch]:
    if not getattr(op, "_ready", False):
        op.setup()
        op._ready = True
    yield from run_in_chunks(op, batch, batch_size)


class StageSetupError(RuntimeError):
    """An operator could not set up (a model path that does not load, a missing API key)."""

    PREFIX = "stage setup failed: "

    @classmethod
    def find(cls, exc: BaseException) -> str | None:
        """The one-line message of a setup failure somewhere in ``exc`` (Ray wraps it)."""
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            for line in str(exc).splitlines():
                if cls.PREFIX in line:
                    return line[line.index(cls.PREFIX) + len(cls.PREFIX):].strip()
            exc = exc.__cause__ or exc.__context__
        return None


class _ActorStage:
    """Actor-pool wrapper: builds and sets up the operator once per actor."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        try:
            op.setup()
        except Exception as exc:
            message = " ".join(str(exc).split())
            raise StageSetupError(f"{StageSetupError.PREFIX}{op.name}: {message}") from exc

    def __call__(self, batch: Batch) -> Batch:
        return run_operator(self.op, batch)


def uses_actors(op: Operator, res: Resources) -> bool:
    return op.stateful or res.num_gpus > 0


def concurrent_batches(op: Operator) -> int:
    """How many batches one actor may run at once: the operator's ``max_concurrent_batches``
    (1 unless it declares its ``__call__`` thread-safe with a larger value)."""
    return max(1, op.max_concurrent_batches)


def map_batches_kwargs(op: Operator, res: Resources) -> dict[str, Any]:
    """The keyword arguments of ``map_batches`` for this operator (testable without Ray)."""
    import ray.data

    kwargs: dict[str, Any] = {
        "batch_size": res.batch_size,
        "batch_format": "numpy",
        "zero_copy_batch": False,
        "num_cpus": res.num_cpus,
        "udf_modifying_row_count": op.changes_row_count,
    }
    if res.num_gpus:
        kwargs["num_gpus"] = res.num_gpus
    if res.memory_bytes:
        kwargs["memory"] = res.memory_bytes
    if uses_actors(op, res):
        low, high = res.concurrency or (1, 1)
        # Ray Data keeps at least one actor while a stage runs and releases the whole pool when
        # the stage is done, which is what lets GPU node groups scale back to zero.
        overlap = concurrent_batches(op)
        extra: dict[str, Any] = {}
        if overlap > 1:
            # The operator's __call__ is thread-safe: Ray Data may run this many batches at once
            # in one actor (threads), so an I/O-bound actor starts its next batch while the
            # slowest rows of the last one finish, instead of idling behind them.
            extra = {"max_concurrent_calls_per_actor": overlap, "enable_true_multi_threading": True}
        kwargs["compute"] = ray.data.ActorPoolStrategy(min_size=max(1, low), max_size=max(1, high), **extra)
        kwargs["fn_constructor_kwargs"] = {"op": op}
    else:
        if res.concurrency:
            kwargs["compute"] = ray.data.TaskPoolStrategy(size=res.concurrency[1])
        # A task takes its whole block and runs the operator on it ``batch_size`` rows at a
        # time (run_in_chunks), yielding each chunk's rows as they are done.
        kwargs["batch_size"] = None
        kwargs["fn_kwargs"] = {"op": op, "batch_size": res.batch_size}
    return kwargs


def stage_callable(op: Operator, res: Resources) -> Any:
    """The function or class handed to ``map_batches``, named after the stage so that Ray's
    progress bars and stats say ``MapBatches(probe)`` rather than a wrapper's name."""
    if uses_actors(op, res):
        return type(op.name, (_ActorStage,), {"__module__": __name__})

    def fn(batch: Batch, op: Operator, batch_size: int) -> Iterator[Batch]:
        yield from _task_fn(batch, op, batch_size)

    fn.__name__ = fn.__qualname__ = op.name
    return fn


def apply_operator(ds: Any, op: Operator, override: Any | None = None) -> Any:
    """``ds.map_batches`` for ``op``: task pool or actor pool, with its resources."""
    res = resolve_resources(op, override)
    kwargs = map_batches_kwargs(op, res)
    fn = stage_callable(op, res)
    if uses_actors(op, res):
        # A task hands its whole output on as one block, so a stage with large batches (dedup
        # takes 256) would make every later stage, and the writer, move in steps of 256
        # videos. Cutting blocks to the actor's batch size keeps the pipeline streaming and
        # lets results be written (and survive a crash) a few videos at a time.
        ds = ds.repartition(target_num_rows_per_block=res.batch_size)
    if op.exact_batches:
        ds = gather_for(ds, op, res)
    logger.debug("stage %s: %s", op.name, {k: v for k, v in kwargs.items() if "kwargs" not in k})
    return ds.map_batches(fn, **kwargs)


def _keep_columns(table: Any, op: Operator) -> Any:
    return table.select([c for c in table.column_names if op.keeps(c)])


def gather_for(ds: Any, op: Operator, res: Resources) -> Any:
    """Blocks of exactly ``res.batch_size`` rows (all but the last) holding only the columns
    ``op`` keeps. Upstream actor stages cut blocks to a few rows; a task pool given a larger
    ``batch_size`` bundles blocks until it has that many rows and then calls its function once
    per full batch plus once for the leftover, which for the writer meant a second, small file
    per task. Exact blocks give one call, one file. Dropping the frames first keeps a gathered
    block at a few KB per row instead of a few MB."""
    def columns(table: Any) -> Any:
        return _keep_columns(table, op)

    columns.__name__ = columns.__qualname__ = f"{op.name}_columns"
    ds = ds.map_batches(columns, batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
                        num_cpus=min(res.num_cpus, 0.25) or 0.25)
    return ds.repartition(target_num_rows_per_block=res.batch_size, strict=True)


def capacity_problems(stages: list[tuple[Operator, Resources]], available: dict[str, float]) -> list[str]:
    """Why these stages cannot all run at once on ``available`` resources (empty: they can).

    Ray Data starts every actor pool's minimum size up front and keeps it while the job runs;
    if those actors take all CPUs (or GPUs), task stages never get scheduled and the job stalls
    instead of failing, so the runner checks this first.
    """
    need = {"CPU": 0.0, "GPU": 0.0}
    largest_task_cpu = 0.0
    for op, res in stages:
        if uses_actors(op, res):
            low = max(1, (res.concurrency or (1, 1))[0])
            need["CPU"] += low * res.num_cpus
            need["GPU"] += low * res.num_gpus
        else:
            largest_task_cpu = max(largest_task_cpu, res.num_cpus)
    need["CPU"] += largest_task_cpu
    problems = []
    for kind, amount in need.items():
        have = available.get(kind, 0.0)
        if amount > have + 1e-9:
            users = ", ".join(f"{op.name} ({getattr(res, 'num_' + kind.lower() + 's')} x "
                              f"{max(1, (res.concurrency or (1, 1))[0])})"
                              for op, res in stages if uses_actors(op, res)
                              and getattr(res, "num_" + kind.lower() + "s"))
            problems.append(
                f"the stages need {amount:g} {kind} at once but the cluster has {have:g} "
                f"(actor pools: {users or 'none'}; plus {largest_task_cpu:g} CPU for a task). "
                f"Lower stages.<name>.num_{kind.lower()}s or concurrency, or give Ray more "
                f"(ray.num_{kind.lower()}s for a local run).")
    return problems
