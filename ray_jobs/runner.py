"""Runs a validated config on Ray Data: sources, stages, writer, then ``stats.json``, then the
exports the config asks for (``export.formats``; none by default)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from operators.base import is_missing
from operators.dataset.resume import remove_temp_files
from operators.dataset.schema import CONFIG_FILE, STATS_FILE
from operators.io import filesystem, join, write_bytes_atomic
from operators.sources import list_source_rows
from ray_jobs.adapter import apply_operator
from ray_jobs.capacity import check_capacity
from ray_jobs.config import ConfigError, PipelineConfig, resolved_yaml
from ray_jobs.dedup_shards import start_dedup_decider, start_dedup_shards, stop_dedup_actors
from ray_jobs.listing import ROWS_PER_BUCKET, clear_pending, drop_retryable, pending_rows, write_listing
from ray_jobs.pipeline import build_pipeline
from ray_jobs.services import LLMServices, check_api_key, new_run_id, start_llm_services

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    output: str
    inputs: int = 0
    skipped_done: int = 0
    skipped_by_extension: Counter = field(default_factory=Counter)  # files that are not inputs
    retried: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    usage: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0
    exports: list[str] = field(default_factory=list)
    export_errors: list[str] = field(default_factory=list)
    todo: int = 0
    #: The rows to process while the run goes on (a ``Pending``; not part of the summary).
    pending: Any = field(default=None, repr=False)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_json(self) -> dict[str, Any]:
        by_stage: Counter = Counter()
        for (stage, _), count in self.rejected.items():
            by_stage[stage] += count
        return {
            "output": self.output,
            "inputs": self.inputs,
            "skipped_already_done": self.skipped_done,
            "skipped_by_extension": sum(self.skipped_by_extension.values()),
            "skipped_by_extension_detail": dict(self.skipped_by_extension.most_common()),
            "retried_rejections": self.retried,
            "processed": self.kept + self.rejected_total,
            "kept": self.kept,
            "rejected": self.rejected_total,
            "rejected_by_stage": dict(sorted(by_stage.items())),
            "rejected_by_reason": {f"{s}/{r}": c for (s, r), c in sorted(self.rejected.items())},
            "stage_worker_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "api_usage": {k: round(v, 6) if isinstance(v, float) else v for k, v in self.usage.items()},
            "wall_seconds": round(self.wall_seconds, 3),
        }

    def render(self) -> str:
        lines = [
            f"sg4v: {self.inputs} inputs, {self.kept} kept, {self.rejected_total} rejected"
            + (f", {self.skipped_done} already done" if self.skipped_done else "")
            + (f", {self.retried} rejections retried" if self.retried else "")
            + f" in {self.wall_seconds:.1f}s -> {self.output}",
        ]
        if self.skipped_by_extension:
            lines.append(f"  not listed (extension not in the source's `extensions`): "
                         f"{sum(self.skipped_by_extension.values())} files: "
                         + ", ".join(f"{e} x{n}" for e, n in self.skipped_by_extension.most_common(8)))
        for (stage, reason), count in sorted(self.rejected.items()):
            lines.append(f"  rejected at {stage}: {reason} x{count}")
        for stage, seconds in self.stage_seconds.items():
            lines.append(f"  {stage}: {seconds:.1f} worker-seconds")
        if self.usage.get("calls") or self.usage.get("cached_calls"):
            u = self.usage
            lines.append(f"  API: {u['calls']} calls paid, {u['cached_calls']} from cache, "
                         f"{u['input_tokens']} input + {u['output_tokens']} output tokens, "
                         f"${u['cost_usd']:.4f}")
        for path in self.exports:
            lines.append(f"  exported to {path}")
        return "\n".join(lines)


def init_ray(config: PipelineConfig) -> None:
    """Connect to the run's Ray: the cluster named by ``ray.address`` or ``RAY_ADDRESS``
    (``auto`` joins the instance already running on this machine), else a private local
    instance started for this run alone. A local run never joins another run's instance by
    accident: Ray's own default would attach to any ``ray start --head`` on the machine and
    then refuse the run's ``num_cpus``/``num_gpus``."""
    import ray

    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        # A cluster's processes take INLINE_RESULT_BYTES from their environment (the image in
        # cluster/ sets it): a job's runtime_env would clash with one given at submission.
        ray.init(address=address, logging_level=logging.WARNING)
        return
    ray.init(
        address="local",
        runtime_env=worker_env(),
        num_cpus=config.ray.num_cpus,
        num_gpus=config.ray.num_gpus,
        object_store_memory=config.ray.object_store_memory,
        logging_level=logging.WARNING,
        include_dashboard=False,
    )


#: Task results at most this large are returned to their owner, the driver, inside its own
#: heap instead of the object store (Ray's ``max_direct_call_object_size``, 100 KiB by
#: default). A block of 1,024 listed rows is about that size: left inlined, every block the
#: cheap first stages ran ahead of the rest sat in the driver's memory, ~230 B a listed row
#: (+224 MiB at 1M rows), unseen by Ray Data's object-store backpressure. Metadata and counts
#: stay inlined. Set for the private local Ray here; on a cluster by the image's environment
#: (``cluster/Dockerfile``).
INLINE_RESULT_BYTES = 16 * 1024


def worker_env() -> dict:
    """The runtime environment of the run's workers (see :data:`INLINE_RESULT_BYTES`)."""
    return {"env_vars": {"RAY_max_direct_call_object_size": str(INLINE_RESULT_BYTES)}}


def block_rows(config: PipelineConfig, rows: int) -> int:
    """Rows per block into the first stage: about four blocks per CPU for a small run, so the
    first stages stream; up to 1,024 rows for a large one, where a block's bookkeeping (a task,
    an object, a few ms on the driver and the workers) would cost more than a rejected row."""
    import ray

    if config.ray.block_rows:
        return config.ray.block_rows
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(4, min(1024, -(-rows // (4 * cpus))))


def set_execution_options(config: PipelineConfig) -> None:
    import ray.data

    from ray_jobs.backpressure import bound_queued_blocks

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = config.ray.preserve_order
    bound_queued_blocks(context, config.ray.max_queued_blocks)


def bind_services(ops: list, services: LLMServices | None) -> list:
    """Bind the run's shared services to the stages that declare them (``run_handles``)."""
    if services is None:
        return ops
    for op in ops:
        if "limiter" in op.run_handles:
            op.bind(limiter=services.limiter, budget=services.budget)
    return ops


def prepare_output(config: PipelineConfig) -> None:
    fs, path = filesystem(config.output)
    fs.makedirs(path, exist_ok=True)
    write_bytes_atomic(join(config.output, CONFIG_FILE), resolved_yaml(config).encode())


def collect_rows(config: PipelineConfig, skipped: Counter | None = None) -> list[dict[str, Any]]:
    """Every source's rows, listed in this process: for small listings and tests (a run lists
    with :func:`ray_jobs.listing.write_listing`). A source that cannot be listed at all (a
    missing folder, a manifest without a ``uri`` column) is a config error, named as such.
    Files a listing left out for their extension are counted into ``skipped``."""
    rows: list[dict[str, Any]] = []
    for i, source in enumerate(config.input):
        try:
            listing = list_source_rows(source)
            rows.extend(listing)
            if skipped is not None:
                skipped.update(getattr(listing, "skipped_by_extension", None) or {})
        except (OSError, ValueError) as exc:
            raise ConfigError(f"input.{i} ({source.kind}): {exc}") from exc
    return rows


def run_pipeline(config: PipelineConfig) -> RunSummary:
    """Run the whole job and return its summary (also written to ``stats.json``).

    The driver holds no per-row state: the sources are listed into Parquet shards by tasks,
    the rows still to do are found by a shuffle on the workers and written to
    ``OUTPUT/pending/`` (:mod:`ray_jobs.listing`), and the stages stream from there, window by
    window, each window in a process of its own (:mod:`ray_jobs.windows`); the driver only adds
    up one small row of counts per block."""
    from ray_jobs.windows import run_windows

    started = time.perf_counter()
    check_api_key(config)
    prepare_output(config)
    init_ray(config)
    summary = resume(config)
    pending, summary.pending = summary.pending, None
    if pending is not None:
        run_id = new_run_id()
        services = start_llm_services(config, run_id)
        shards = decider = None
        try:
            if services is not None:
                # The API stage talks to the endpoint the services point at (the local test
                # server, in a smoke run).
                config = config.model_copy(update={"llm": services.llm})
            check_capacity(config, build_pipeline(config))
            shards = start_dedup_shards(config, run_id)
            decider = start_dedup_decider(config, run_id, shards)
            if config.ray.window_rows:
                run_windows(config, pending.files, run_id, lambda counts: add_tally(summary, counts))
            else:
                for counts in stream_stages(config, pending.dataset, pending.rows, services, decider):
                    add_tally(summary, counts)
        finally:
            stop_dedup_actors(shards, decider)
            if services is not None:
                services.close()
        clear_pending(config.output)
    summary.wall_seconds = time.perf_counter() - started
    write_bytes_atomic(join(config.output, STATS_FILE),
                       json.dumps(summary.to_json(), indent=2).encode())
    run_exports(config, summary)
    return summary


def stream_stages(config: PipelineConfig, dataset: Any, rows: int, services: LLMServices | None,
                  decider: Any) -> Iterator[str]:
    """Stream ``dataset`` (``rows`` rows still to do) through the stages and the writer, in this
    process, with the run's shared actors (``services``, the dedup ``decider``); one
    :func:`counts_json` string per block written."""
    set_execution_options(config)
    ops = bind_services(build_pipeline(config), services)
    if decider is not None:
        for op in ops:
            if "decider" in op.run_handles:
                op.bind(decider=decider)
    ds = dataset.repartition(target_num_rows_per_block=block_rows(config, rows))
    for op in ops:
        ds = apply_operator(ds, op, config.stages.get(op.name))
    ds = ds.map_batches(block_tally, batch_format="numpy", batch_size=None, num_cpus=0.25)
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        yield from batch[TALLY]


def run_exports(config: PipelineConfig, summary: RunSummary) -> None:
    """The exports ``export.formats`` asks for, streamed from the finished output (a rerun
    replaces the ones it wrote before). An export that cannot be made (nothing captioned) is
    noted in ``summary.export_errors``; the run's own output stays as it is."""
    from operators.dataset.exports import ExportError, ExportOptions, default_dest, export
    from operators.dataset.exports.options import parse_size

    c = config.export
    options = ExportOptions(overwrite=True, video_token=c.llava_media, keyframe_turns=c.keyframe_turns,
                            keyframes=c.keyframes, shard_size=c.shard_size,
                            archive_size=parse_size(c.archive_size))
    for fmt in c.formats:
        dest = join(c.dest, fmt) if c.dest else default_dest(config.output, fmt)
        try:
            summary.exports.append(export(config.output, fmt, dest, options).dest)
        except ExportError as exc:
            summary.export_errors.append(f"export {fmt}: {exc}")


def resume(config: PipelineConfig) -> RunSummary:
    """List the inputs (or reuse the listing) and find the rows an earlier run on the output
    has not decided. Rejections a rerun may fix are taken out of ``rejected/`` first, so each
    video keeps exactly one decision, the new one. ``summary.pending`` holds the
    rows to process (a :class:`ray_jobs.listing.Pending`: files under ``OUTPUT/pending/``; None
    when there are none), ``summary.todo`` their number."""
    remove_temp_files(config.output)
    listing = write_listing(config)
    summary = RunSummary(output=config.output, inputs=listing.rows,
                         skipped_by_extension=Counter(dict(listing.skipped_by_extension)))
    summary.retried = drop_retryable(config.output)
    # A bucket's file is the smallest unit of a window: no larger than a window.
    pending = pending_rows(listing, config.output, config.ray.window_rows or ROWS_PER_BUCKET)
    summary.todo = pending.rows
    summary.skipped_done = listing.rows - summary.todo
    summary.pending = pending if summary.todo else None
    if summary.skipped_done or summary.retried:
        logger.info("resuming: %d of %d inputs already done, %d rejections retried",
                    summary.skipped_done, listing.rows, summary.retried)
    return summary


#: The column of :func:`block_tally`'s one row per block.
TALLY = "tally"


def block_tally(batch: dict[str, Any]) -> dict[str, Any]:
    """A block of the writer's summary rows as one row of counts (JSON), on the workers: the
    driver adds up one row per block instead of one per video."""
    part = RunSummary(output="")
    tally(part, batch)
    out = np.empty(1, dtype=object)
    out[0] = counts_json(part)
    return {TALLY: out}


def counts_json(summary: RunSummary) -> str:
    """The counts of ``summary`` (kept, rejected per reason, API usage, worker seconds) as the
    JSON text :func:`add_tally` adds to another summary."""
    return json.dumps({"kept": summary.kept, "rejected": [[s, r, n] for (s, r), n in summary.rejected.items()],
                       "usage": dict(summary.usage), "seconds": summary.stage_seconds})


def add_tally(summary: RunSummary, counts: str) -> None:
    """Add one :func:`block_tally` row to the run's counts."""
    part = json.loads(counts)
    summary.kept += part["kept"]
    for stage, reason, n in part["rejected"]:
        summary.rejected[(stage, reason)] += n
    summary.usage.update(part["usage"])
    for stage, seconds in part["seconds"].items():
        summary.stage_seconds[stage] = summary.stage_seconds.get(stage, 0.0) + seconds


def tally(summary: RunSummary, batch: dict[str, Any]) -> None:
    """Add one batch of the writer's summary rows to the run's counts."""
    for stage, reason in zip(batch["reject_stage"], batch["reject_reason"], strict=True):
        if is_missing(reason):
            summary.kept += 1
        else:
            summary.rejected[(str(stage), str(reason))] += 1
    for usage in batch.get("usage", []):
        if isinstance(usage, dict):
            for key, value in usage.items():
                if isinstance(value, (int, float)) and value == value:
                    # Counts may arrive as floats (a column Arrow widened); keep them whole.
                    summary.usage[key] += value if key == "cost_usd" else int(value)
    for column, values in batch.items():
        if column.startswith("_t_"):
            stage = column[3:]
            total = float(sum(v for v in values if v is not None and v == v))
            summary.stage_seconds[stage] = summary.stage_seconds.get(stage, 0.0) + total
