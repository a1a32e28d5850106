"""The pipeline as a plain list of operators: config in, stages out.

This file says which operator runs in which order and which config section drives it; it holds
no logic of its own. Stages a run does not enable are simply not in the list.
"""

from __future__ import annotations

from operators.base import Operator
from operators.sources import ExpandShards, needs_shard_expansion
from operators.video.duration_filter import DurationFilter
from operators.video.probe import ProbeVideo
from operators.video.sample import SampleFrames
from ray_jobs.config import PipelineConfig

#: Every stage name, in pipeline order (also the keys accepted under ``stages:``).
STAGE_NAMES: tuple[str, ...] = (
    "expand_shards",
    "probe",
    "duration_filter",
    "sample_frames",
    "write",
)


def build_operators(config: PipelineConfig) -> list[Operator]:
    """The stages between the sources and the writer, in order."""
    ops: list[Operator] = []
    shard_sources = [s for s in config.input if needs_shard_expansion(s)]
    if shard_sources:
        ops.append(ExpandShards(shard_sources[0]))
    ops += [
        ProbeVideo(config.probe),
        DurationFilter(config.filter),
        SampleFrames(config.frames),
    ]
    return ops
