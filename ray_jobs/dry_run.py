"""Running the pipeline part of the way, on a sample of the inputs, without writing a dataset.

``sg4v calibrate-keyframes`` stops after the CLIP encoder to see how many keyframes each
threshold would give; ``sg4v estimate`` stops after keyframe selection to count the API calls
a full run would make. Both take their rows back to the driver, so they sample.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np

from operators.base import is_missing
from ray_jobs.adapter import apply_operator
from ray_jobs.config import PipelineConfig
from ray_jobs.pipeline import build_pipeline
from ray_jobs.runner import check_capacity, collect_rows, init_ray, input_blocks, set_execution_options

logger = logging.getLogger(__name__)


def sample_rows(rows: list[dict[str, Any]], sample: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """A reproducible sample of the listed rows (all of them when ``sample`` is None)."""
    if sample is None or sample >= len(rows):
        return rows
    return random.Random(seed).sample(rows, sample)


def run_until(config: PipelineConfig, last_stage: str, sample: int | None, columns: list[str],
              skip: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], int, int]:
    """Run the stages up to and including ``last_stage`` (leaving out ``skip``) on a sample.

    Returns the live rows' ``columns``, the number of sampled rows rejected on the way, and
    the number of inputs listed in all (before sampling).
    """
    import ray.data

    ops = [op for op in build_pipeline(config) if op.name not in skip]
    names = [op.name for op in ops]
    if last_stage not in names:
        raise ValueError(f"stage {last_stage} is not enabled in this config (stages: {', '.join(names)})")
    ops = ops[: names.index(last_stage) + 1]
    listed = collect_rows(config)
    rows = sample_rows(listed, sample)
    if not rows:
        return [], 0, len(listed)
    init_ray(config)
    set_execution_options(config)
    check_capacity(config, ops)
    ds = ray.data.from_items(rows, override_num_blocks=input_blocks(len(rows)))
    for op in ops:
        ds = apply_operator(ds, op, config.stages.get(op.name))
    kept: list[dict[str, Any]] = []
    rejected = 0
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        for i, reason in enumerate(batch["reject_reason"]):
            if not is_missing(reason):
                rejected += 1
                continue
            kept.append({c: _plain(batch[c][i]) for c in columns if c in batch})
    return kept, rejected, len(listed)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_plain(v) for v in value]
    return value
