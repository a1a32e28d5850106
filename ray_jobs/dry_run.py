"""Running the pipeline part of the way, on a sample of the inputs, without writing a dataset.

``sg4v calibrate-keyframes`` stops after the CLIP encoder to see how many keyframes each
threshold would give; ``sg4v estimate`` stops after keyframe selection to count the API calls
a full run would make. Both take their rows back to the driver, so they sample, and they sample
the listing's Parquet shards on the workers (``random_sample``), never holding the whole listing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from operators.base import is_missing
from operators.dedup.operator import SemanticDedup
from ray_jobs.adapter import apply_operator
from ray_jobs.capacity import check_capacity
from ray_jobs.config import PipelineConfig
from ray_jobs.listing import read_listing, write_listing
from ray_jobs.pipeline import build_pipeline
from ray_jobs.runner import block_rows, init_ray, set_execution_options

logger = logging.getLogger(__name__)


def sample_listing(ds: Any, listed: int, sample: int | None, seed: int = 0) -> Any:
    """A reproducible sample of about ``sample`` listed rows (all of them when None): each row
    is drawn with a probability a little above ``sample / listed``, then the first ``sample``
    are taken, so only the sample ever leaves the workers."""
    if sample is None or sample >= listed:
        return ds
    fraction = min(1.0, 1.5 * sample / listed + 50 / listed)
    return ds.random_sample(fraction, seed=seed).limit(sample)


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
    for op in ops:
        if "decider" in op.run_handles:
            # No job-wide deciding actor here: the stage's one worker decides on its own copy.
            op.bind(decider=SemanticDedup(op.config, output=op.output))
    init_ray(config)
    set_execution_options(config)
    listing = write_listing(config)
    rows = sample_listing(read_listing(listing, config.output), listing.rows, sample).take_all()
    if not rows:
        return [], 0, listing.rows
    check_capacity(config, ops)
    ds = ray.data.from_items(rows)
    ds = ds.repartition(target_num_rows_per_block=block_rows(config, len(rows)))
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
    return kept, rejected, listing.rows


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_plain(v) for v in value]
    return value
