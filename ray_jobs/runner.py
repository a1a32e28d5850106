"""Runs a validated config on Ray Data: sources, stages, writer, then ``stats.json``."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from operators.base import is_missing
from operators.io import filesystem, join, write_bytes_atomic
from operators.sources import list_source_rows
from operators.writers import WriteShards
from ray_jobs.adapter import apply_operator, capacity_problems, resolve_resources
from ray_jobs.config import ConfigError, PipelineConfig, resolved_yaml
from ray_jobs.dedup_shards import check_dedup_memory, shard_cpus, start_dedup_shards, stop_dedup_shards
from ray_jobs.exports import export_sharegpt4video
from ray_jobs.pipeline import build_operators
from ray_jobs.resume import drop_rejections, remove_temp_files, resume_state
from ray_jobs.services import check_api_key, start_llm_services

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    output: str
    inputs: int = 0
    skipped_done: int = 0
    retried: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    usage: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0

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
        for (stage, reason), count in sorted(self.rejected.items()):
            lines.append(f"  rejected at {stage}: {reason} x{count}")
        for stage, seconds in self.stage_seconds.items():
            lines.append(f"  {stage}: {seconds:.1f} worker-seconds")
        if self.usage.get("calls") or self.usage.get("cached_calls"):
            u = self.usage
            lines.append(f"  API: {u['calls']} calls paid, {u['cached_calls']} from cache, "
                         f"{u['input_tokens']} input + {u['output_tokens']} output tokens, "
                         f"${u['cost_usd']:.4f}")
        return "\n".join(lines)


def init_ray(config: PipelineConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    ray.init(
        num_cpus=config.ray.num_cpus,
        num_gpus=config.ray.num_gpus,
        object_store_memory=config.ray.object_store_memory,
        logging_level=logging.WARNING,
        include_dashboard=False,
    )


def input_blocks(rows: int) -> int:
    """Blocks of a few videos each, so the first stages stream instead of waiting for large
    blocks; capped so that millions of inputs do not become millions of objects."""
    return max(1, min(-(-rows // 4), 50_000))


def check_capacity(config: PipelineConfig, ops: list) -> None:
    """Fail fast, before a job that could never progress, when the actor pools' minimum
    sizes do not fit the cluster. On an autoscaling cluster this is only a warning."""
    import ray

    stages = [(op, resolve_resources(op, config.stages.get(op.name))) for op in ops]
    available = dict(ray.cluster_resources())
    available["CPU"] = available.get("CPU", 0.0) - shard_cpus(config)  # held by the dedup parts
    problems = capacity_problems(stages, available)
    on_cluster = bool(config.ray.address or os.environ.get("RAY_ADDRESS"))
    check_dedup_memory(config, on_cluster)
    if not problems:
        return
    if on_cluster:
        for problem in problems:
            logger.warning("%s (waiting for the autoscaler)", problem)
    else:
        raise ConfigError("; ".join(problems))


def set_execution_options(config: PipelineConfig) -> None:
    import ray.data

    preserve = config.ray.preserve_order
    if preserve is None:
        preserve = config.steps.dedup
    ray.data.DataContext.get_current().execution_options.preserve_order = preserve


def prepare_output(config: PipelineConfig) -> None:
    fs, path = filesystem(config.output)
    fs.makedirs(path, exist_ok=True)
    write_bytes_atomic(join(config.output, "config.yaml"), resolved_yaml(config).encode())


def collect_rows(config: PipelineConfig) -> list[dict[str, Any]]:
    """Every source's rows, listed on the driver. A source that cannot be listed at all (a
    missing folder, a manifest without a ``uri`` column) is a config error, named as such."""
    rows: list[dict[str, Any]] = []
    for i, source in enumerate(config.input):
        try:
            rows.extend(list_source_rows(source))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"input.{i} ({source.kind}): {exc}") from exc
    return rows


def run_pipeline(config: PipelineConfig) -> RunSummary:
    """Run the whole job and return its summary (also written to ``stats.json``)."""
    import ray.data

    started = time.perf_counter()
    check_api_key(config)
    prepare_output(config)
    rows = collect_rows(config)
    summary = RunSummary(output=config.output, inputs=len(rows))
    rows = resume(config.output, rows, summary)
    if rows:
        init_ray(config)
        set_execution_options(config)
        services = start_llm_services(config)
        shards = None
        try:
            ds = ray.data.from_items(rows, override_num_blocks=input_blocks(len(rows)))

            def stages(dedup_shards: list | None = None) -> list:
                return [*build_operators(config, services, dedup_shards),
                        WriteShards(config.writer, output=config.output)]
            ops = stages()
            check_capacity(config, ops)
            shards = start_dedup_shards(config)
            if shards:
                ops = stages(shards)
            for op in ops:
                ds = apply_operator(ds, op, config.stages.get(op.name))
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                tally(summary, batch)
        finally:
            stop_dedup_shards(shards)
            if services is not None:
                services.close()
    export_sharegpt4video(config.output)
    summary.wall_seconds = time.perf_counter() - started
    write_bytes_atomic(join(config.output, "stats.json"),
                       json.dumps(summary.to_json(), indent=2).encode())
    return summary


def resume(output: str, rows: list[dict[str, Any]], summary: RunSummary) -> list[dict[str, Any]]:
    """The rows an earlier run on ``output`` has not finished. Rejections a rerun may fix are
    taken out of ``rejected/`` first, so each video keeps exactly one decision, the new one."""
    remove_temp_files(output)
    state = resume_state(output)
    todo = [r for r in rows if r["video_id"] not in state.done]
    summary.skipped_done = len(rows) - len(todo)
    retry = state.retry & {r["video_id"] for r in todo}
    summary.retried = len(retry)
    drop_rejections(output, retry)
    if summary.skipped_done or retry:
        logger.info("resuming: %d of %d inputs already done, %d rejections retried",
                    summary.skipped_done, len(rows), len(retry))
    return todo


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
