"""The operator contract every pipeline stage follows.

An operator is a small class with a typed config, an optional ``setup()`` that loads models or
clients once per worker, and ``__call__(batch) -> batch``. It declares the columns it reads and
the columns it adds, and the resources it needs. Nothing here imports Ray: ``ray_jobs.adapter``
turns an operator into a ``Dataset.map_batches`` call.

A batch is a ``dict[str, numpy.ndarray]`` (Ray Data's "numpy" batch format). Columns holding
lists, bytes or ``None`` are object arrays. Operators only ever see live rows: rows that an
earlier stage rejected are set aside by :func:`apply_to_live_rows` and merged back afterwards,
so a stage never needs to skip them itself. To reject a row, an operator writes the three
``reject_*`` columns for that row; the row then goes on untouched until the writer puts it in
``rejected/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]

REJECT_COLUMNS: tuple[str, ...] = ("reject_stage", "reject_reason", "reject_detail")


class RowRejected(Exception):
    """One row cannot be used: the stage rejects it with ``reason`` (and ``detail``).

    The one exception an operator raises for a problem of the input (a broken file, a video
    without keyframes); never for a bug or bad config. :meth:`Operator.map_rows` turns it into
    the row's ``reject_*`` columns under the stage's name.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Resources:
    """What one worker of an operator needs, and how many workers may run.

    ``concurrency`` is ``(min, max)`` workers. An actor pool keeps at least one actor while its
    stage runs, grows towards ``max`` as the autoscaler adds nodes, and is released when the
    stage is done, so GPU node groups can scale back to zero.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    concurrency: tuple[int, int] | None = None
    batch_size: int = 8
    memory_bytes: int | None = None


class Operator:
    """Base class of all pipeline stages.

    Subclasses set ``name``, ``input_columns`` and ``output_columns`` and implement
    ``__call__``. ``output_columns`` are the columns the operator adds or overwrites, besides
    the ``reject_*`` columns every operator may set.
    """

    name: ClassVar[str] = "operator"
    input_columns: ClassVar[tuple[str, ...]] = ()
    output_columns: ClassVar[tuple[str, ...]] = ()
    #: True when workers hold state (models, clients, an index): run as an actor pool.
    stateful: ClassVar[bool] = False
    #: True for stages that must see rejected rows too (the writer); others see live rows only.
    sees_rejected: ClassVar[bool] = False
    #: True for stages that return a different number of rows than they get (shard expansion).
    changes_row_count: ClassVar[bool] = False
    #: Batches one actor may run at once (Ray Data's max_concurrent_calls_per_actor, on
    #: threads). More than 1 only for an operator whose ``__call__`` is thread-safe.
    max_concurrent_batches: ClassVar[int] = 1
    #: True for a stage that turns each call into files of ``batch_size`` rows (the writer):
    #: the adapter first keeps only the columns :meth:`keeps` accepts, then gathers rows into
    #: blocks of exactly ``batch_size``, so each call gets that many rows (all but the last).
    exact_batches: ClassVar[bool] = False

    #: True for a stage that opens the video itself (the probe, the sampler, the keyframe
    #: re-read, clip files): it reads a shard member from ``source_bytes`` when the probe
    #: handed them on. The pipeline list marks the last such stage ``releases_source``; the
    #: adapter drops the bytes after it (and from every rejected row at once).
    opens_source: ClassVar[bool] = False
    releases_source: bool = False

    def keeps(self, column: str) -> bool:
        """Whether an ``exact_batches`` stage needs ``column`` (the rest is dropped before it)."""
        return True

    def __init__(self, config: Any = None, resources: Resources | None = None) -> None:
        self.config = config
        self.resources = resources or self.default_resources()

    def default_resources(self) -> Resources:
        return Resources()

    def setup(self) -> None:
        """Load models or clients once per worker. The default has nothing to load."""

    def __call__(self, batch: Batch) -> Batch:  # pragma: no cover - interface
        raise NotImplementedError

    #: Run-time handles the runner binds before the run (shared services such as the API
    #: limiter); the pipeline list builds the operator without them.
    run_handles: ClassVar[tuple[str, ...]] = ()

    def bind(self, **handles: Any) -> None:
        """Attach the run-time handles this operator declares in ``run_handles``."""
        unknown = set(handles) - set(self.run_handles)
        if unknown:
            raise TypeError(f"{self.name} takes no run-time handle {sorted(unknown)}")
        for key, value in handles.items():
            setattr(self, key, value)

    def map_rows(self, batch: Batch, row: Callable[[int], Mapping[str, Any]],
                 columns: Sequence[str] | None = None) -> Batch:
        """The per-row loop of a stage: ``row(i)`` returns row ``i``'s values of ``columns``
        (default: ``output_columns``) or raises :class:`RowRejected`, which rejects that row
        under this stage's name; the values land in ``batch`` as object columns."""
        columns = tuple(self.output_columns if columns is None else columns)
        n = batch_size_of(batch)
        values: dict[str, list[Any]] = {c: [None] * n for c in columns}
        for i in range(n):
            try:
                produced = row(i)
            except RowRejected as exc:
                logger.info("%s rejected row %d: %s", self.name, i, exc)
                reject(batch, i, self.name, exc.reason, exc.detail)
                continue
            for column, value in produced.items():
                values[column][i] = value
        for column, column_values in values.items():
            batch[column] = object_column(column_values)
        return batch


def batch_size_of(batch: Mapping[str, Sequence[Any]]) -> int:
    for values in batch.values():
        return len(values)
    return 0


def object_column(values: Sequence[Any]) -> np.ndarray:
    """An object array holding ``values`` as they are (numpy must not stack nested lists)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def reject(batch: Batch, index: int, stage: str, reason: str, detail: str = "") -> None:
    """Mark row ``index`` of ``batch`` as rejected by ``stage`` for ``reason``."""
    for column in REJECT_COLUMNS:
        if column not in batch or batch[column].dtype != object:
            batch[column] = object_column(list(batch.get(column, [None] * batch_size_of(batch))))
    batch["reject_stage"][index] = stage
    batch["reject_reason"][index] = reason
    batch["reject_detail"][index] = detail[:2000]


def is_missing(value: Any) -> bool:
    """None, a blank string, or NaN (how an all-null Arrow or pandas column arrives)."""
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (float, np.floating)) and np.isnan(value))


def cell(batch: Mapping[str, Any], column: str, i: int) -> Any:
    """Row ``i`` of ``column``, or None when the column is absent or the value missing
    (:func:`is_missing`). The one way operators read an optional value."""
    values = batch.get(column)
    if values is None:
        return None
    value = values[i]
    return None if is_missing(value) else value


def as_list(value: Any) -> list[Any]:
    """A list column's value as a list: ``[]`` when missing, numpy arrays and tuples listed."""
    if value is None or is_missing(value):
        return []
    return list(value)


def live_mask(batch: Batch) -> np.ndarray:
    """True for rows no stage has rejected yet."""
    reasons = batch.get("reject_reason")
    n = batch_size_of(batch)
    if reasons is None:
        return np.ones(n, dtype=bool)
    return np.array([is_missing(r) for r in reasons], dtype=bool)


def take_rows(batch: Batch, mask: np.ndarray) -> Batch:
    return {k: np.asarray(v)[mask] if isinstance(v, np.ndarray) else object_column(v)[mask]
            for k, v in batch.items()}


def _as_column(values: Any, n: int) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values
    values = list(values)
    if len(values) != n:
        raise ValueError(f"operator returned a column of length {len(values)} for {n} rows")
    return object_column(values)


def normalize_batch(batch: Mapping[str, Any]) -> Batch:
    """Turn lists in an operator's output into 1-D numpy columns of equal length, with
    ``None`` (not NaN) in the ``reject_*`` columns of live rows."""
    n = batch_size_of(batch)
    out = {k: _as_column(v, n) for k, v in batch.items()}
    for column in REJECT_COLUMNS:
        if column in out:
            out[column] = object_column([None if is_missing(v) else v for v in out[column]])
    return out


def merge_rows(parts: list[tuple[np.ndarray, Batch]], n: int) -> Batch:
    """Put row subsets back in their original order; ``parts`` holds (row indices, rows)."""
    columns: list[str] = []
    for _, part in parts:
        for column in part:
            if column not in columns:
                columns.append(column)
    out: Batch = {}
    for column in columns:
        merged = np.empty(n, dtype=object)
        merged[:] = None
        for indices, part in parts:
            if column in part:
                values = part[column]
                for j, i in enumerate(indices):
                    merged[i] = values[j]
        out[column] = merged
    return out


def apply_to_live_rows(op: Callable[[Batch], Batch], batch: Batch) -> Batch:
    """Run ``op`` on the batch's live rows only, and return every row, in order.

    Rejected rows pass through with ``None`` in the columns the operator adds. An operator
    may also return more rows than it was given (a source expanding a shard into samples);
    then the rejected rows are appended after them.
    """
    batch = normalize_batch(batch)
    n = batch_size_of(batch)
    mask = live_mask(batch)
    if mask.all():
        return normalize_batch(op(batch))
    live_idx = np.flatnonzero(mask)
    dead_idx = np.flatnonzero(~mask)
    dead = take_rows(batch, ~mask)
    if len(live_idx) == 0:
        return dead
    produced = normalize_batch(op(take_rows(batch, mask)))
    m = batch_size_of(produced)
    if m != len(live_idx):
        # Row count changed: keep produced rows first, then the rejected ones.
        return merge_rows([(np.arange(m), produced), (np.arange(m, m + len(dead_idx)), dead)],
                          m + len(dead_idx))
    return merge_rows([(live_idx, produced), (dead_idx, dead)], n)
