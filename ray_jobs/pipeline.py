"""The pipeline as a plain list of operators: config in, stages out.

``STAGES`` is the one table of the stages, in pipeline order: each stage's operator class (whose
``name`` is what ``stages.<name>``, rejections, ``stats.json`` and the docs use), the config
section that configures it, the ``steps`` switch that turns it on, and how it is built.
``build_pipeline(config)`` returns every enabled stage, the API stage and the writer included;
run-time handles (the API stage's limiter and budget) are bound by the runner afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from operators.base import Operator
from operators.captions.diffsw import DiffCaptioner
from operators.captions.short_caption import ShortCaption
from operators.captions.text_embed import TextEmbed
from operators.dataset.writer import WriteShards
from operators.dedup.operator import SemanticDedup
from operators.keyframes.clip_encoder import ClipEncode
from operators.keyframes.operator import SelectKeyframes
from operators.sources import ExpandShards, needs_shard_expansion
from operators.video.clips import CutClips
from operators.video.duration_filter import DurationFilter
from operators.video.probe import ProbeVideo
from operators.video.sample import SampleFrames
from ray_jobs.config import PipelineConfig


@dataclass(frozen=True)
class Stage:
    """One row of :data:`STAGES`."""

    operator: type[Operator]
    #: The config section that configures the stage (``None``: the stage has none of its own).
    section: str | None
    #: The ``steps.<step>`` switch that turns the stage on (``None``: always on).
    step: str | None
    build: Callable[[PipelineConfig], Operator | None]

    @property
    def name(self) -> str:
        return self.operator.name


def _expand_shards(config: PipelineConfig) -> Operator | None:
    shard_sources = [s for s in config.input if needs_shard_expansion(s)]
    return ExpandShards(shard_sources[0]) if shard_sources else None


STAGES: tuple[Stage, ...] = (
    Stage(ExpandShards, "input", None, _expand_shards),
    Stage(ProbeVideo, "probe", None, lambda c: ProbeVideo(c.probe)),
    Stage(DurationFilter, "filter", None, lambda c: DurationFilter(c.filter)),
    Stage(SampleFrames, "frames", None, lambda c: SampleFrames(c.frames)),
    Stage(ShortCaption, "short_caption", "short_caption", lambda c: ShortCaption(c.short_caption)),
    Stage(TextEmbed, "embed", "dedup", lambda c: TextEmbed(c.embed)),
    Stage(SemanticDedup, "dedup", "dedup",
          # The job decides in its own deciding actor (ray_jobs/dedup_shards.py), which lives
          # through every window of the run.
          lambda c: SemanticDedup(c.dedup, output=c.output, remote_decider=True)),
    Stage(ClipEncode, "clip", "keyframes", lambda c: ClipEncode(c.clip)),
    Stage(SelectKeyframes, "keyframes", "keyframes",
          lambda c: SelectKeyframes(c.keyframes, output_dir=c.output)),
    Stage(DiffCaptioner, "llm", "captions", lambda c: DiffCaptioner(c.llm, output=c.output)),
    # Clip files come last, so only rows that survived every paid stage are cut.
    Stage(CutClips, "writer", None,
          lambda c: CutClips(c.writer, output=c.output) if c.writer.clips != "none" else None),
    Stage(WriteShards, "writer", None, lambda c: WriteShards(c.writer, output=c.output)),
)

#: Every stage name, in pipeline order (also the keys accepted under ``stages:``).
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def build_pipeline(config: PipelineConfig) -> list[Operator]:
    """Every stage this config enables, in order, from the sources' first stage to the writer."""
    ops: list[Operator] = []
    for stage in STAGES:
        if stage.step is not None and not getattr(config.steps, stage.step):
            continue
        op = stage.build(config)
        if op is not None:
            ops.append(op)
    openers = [op for op in ops if op.opens_source]
    if openers:
        openers[-1].releases_source = True  # shard members' bytes go no further
    return ops


def stage_docs() -> list:
    """Every stage with its names and default resources, for docs/configuration.md."""
    from operators.config_reference import StageDoc
    from ray_jobs.adapter import uses_actors

    # A config in which every stage is built: all steps on, a shard source for expand_shards.
    config = PipelineConfig.model_validate({
        "input": [{"kind": "folder", "path": "videos"}, {"kind": "webdataset", "shards": "s.tar"}],
        "output": "out"})
    docs = []
    for stage in STAGES:
        op = stage.build(config)
        assert op is not None, stage.name
        pool = "actors" if uses_actors(op, op.resources) else "tasks"
        docs.append(StageDoc(stage.name, stage.section, stage.step, pool, op.resources))
    return docs
