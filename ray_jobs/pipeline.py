"""The pipeline as a plain list of operators: config in, stages out.

This file says which operator runs in which order and which config section drives it; it holds
no logic of its own. Stages a run does not enable are simply not in the list.
"""

from __future__ import annotations

from functools import partial

from operators.base import Operator
from operators.captions.short_caption import ShortCaption
from operators.captions.text_embed import TextEmbed
from operators.dedup.operator import SemanticDedup
from operators.keyframes.clip_encoder import ClipEncode
from operators.keyframes.operator import SelectKeyframes
from operators.llm.diffsw import DiffCaptioner
from operators.sources import ExpandShards, needs_shard_expansion
from operators.video.duration_filter import DurationFilter
from operators.video.probe import ProbeVideo
from operators.video.sample import SampleFrames
from ray_jobs.config import PipelineConfig
from ray_jobs.resume import dedup_resume_state
from ray_jobs.services import LLMServices

#: Every stage name, in pipeline order (also the keys accepted under ``stages:``).
STAGE_NAMES: tuple[str, ...] = (
    "expand_shards",
    "probe",
    "duration_filter",
    "sample_frames",
    "short_caption",
    "text_embed",
    "semantic_dedup",
    "clip_encode",
    "select_keyframes",
    "diff_caption",
    "write",
)


def build_operators(config: PipelineConfig, llm: LLMServices | None = None,
                    dedup_shards: list | None = None) -> list[Operator]:
    """The stages between the sources and the writer, in order. ``llm`` carries the run's
    shared limiter and budget; without it the API stage is left out (dry runs).
    ``dedup_shards``: the proxies of the dedup part actors (``dedup.shards`` > 1)."""
    ops: list[Operator] = []
    shard_sources = [s for s in config.input if needs_shard_expansion(s)]
    if shard_sources:
        ops.append(ExpandShards(shard_sources[0]))
    ops += [
        ProbeVideo(config.probe),
        DurationFilter(config.filter),
        SampleFrames(config.frames),
    ]
    if config.steps.short_caption:
        ops.append(ShortCaption(config.short_caption))
    if config.steps.dedup:
        ops += [
            TextEmbed(config.embed),
            SemanticDedup(config.dedup, resume=partial(dedup_resume_state, config.output),
                          output=config.output, shards=dedup_shards),
        ]
    if config.steps.keyframes:
        ops += [
            ClipEncode(config.clip),
            SelectKeyframes(config.keyframes, output_dir=config.output),
        ]
    if config.steps.captions and llm is not None:
        ops.append(DiffCaptioner(llm.llm, output=config.output, limiter=llm.limiter, budget=llm.budget))
    return ops
