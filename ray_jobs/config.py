"""The job's configuration: YAML in, a typed and validated ``PipelineConfig`` out.

Every section is the config model of the operator it drives, so the keys a user writes are the
fields the code reads. Unknown keys and wrong types fail here, before Ray starts, with a message
that names the key path (``frames.every_s: Input should be a valid number``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from operators.captions.short_caption import ShortCaptionConfig
from operators.captions.text_embed import TextEmbedConfig
from operators.config import StrictModel
from operators.dataset.writer import WriterConfig
from operators.dedup.config import DedupConfig
from operators.keyframes.clip_model import ClipConfig
from operators.keyframes.select import KeyframeConfig
from operators.llm.config import LLMConfig
from operators.sources import SourceConfig
from operators.video.duration_filter import DurationFilterConfig
from operators.video.probe import ProbeConfig
from operators.video.sample import SampleConfig
from testing.fake_server_config import FakeServerConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class RayConfig(StrictModel):
    address: str | None = Field(
        None,
        description="Ray cluster address. None: the cluster in RAY_ADDRESS if set (as under "
        "`ray job submit`), else a private local Ray started for this run, even when another "
        "Ray instance already runs on the machine. `auto`: join the Ray instance already "
        "running on this machine (started with `ray start --head`) on purpose; num_cpus, "
        "num_gpus and object_store_memory are then the cluster's own and must be unset.",
    )
    num_cpus: int | None = Field(None, description="CPUs of a local Ray (None: all).")
    num_gpus: int | None = Field(
        None, description="GPUs a local Ray declares (None: detected). Logical GPUs on a CPU "
        "machine let GPU stages be scheduled for tests.")
    object_store_memory: int | None = Field(
        None, description="Bytes of object store for a local Ray (None: Ray's default).")
    preserve_order: bool = Field(
        False, description="Keep rows in input order between stages. Off by default: dedup "
        "decides in arrival order and a rerun never re-decides a written row, so no stage needs "
        "to wait for a slow row ahead of it (see docs/design.md, 'Order'). On: every stage's "
        "output waits for the slowest earlier task, as a reproducible order for debugging.")
    capacity_timeout_s: float | None = Field(
        1800.0, ge=0, description="On a cluster, how long to wait for resources when the stages' "
        "actor pools cannot all start: with no autoscaler (or one that cannot add them), fail after "
        "this many seconds naming the stages and resources; with an autoscaler, keep waiting and "
        "log progress. None: wait without limit. A local Ray fails at once.")
    block_rows: int | None = Field(
        None, ge=1, description="Rows per block entering the first stage. None: from the number of "
        "rows to process and the cluster's CPUs (between 4 and 1024): small blocks stream a small "
        "run, large ones keep the per-block bookkeeping of millions of rows cheap.")
    max_queued_blocks: int | None = Field(
        64, ge=1, description="Most blocks a stage may have waiting for the stages after it before "
        "it is given no new input (on top of Ray Data's byte-based backpressure, which blocks of "
        "small rows never reach). Every waiting block costs the driver its bookkeeping, so this "
        "keeps cheap first stages from running ahead over the whole input (1M listed rows: driver "
        "peak 289 MiB instead of 325). None: Ray Data's policies only.")
    window_rows: int = Field(
        250_000, ge=0, description="Rows per window: the stages run over the rows still to do one "
        "window at a time, each in a fresh driver process on the same cluster (a child of the "
        "job's driver, which keeps the listing, resume, API services, the dedup decider and parts, "
        "and the counts). A Ray Data driver keeps some memory for every task it ever ran; a "
        "window's process gives it back when it ends, so the job's driver memory stays the same at "
        "any number of inputs. Each window starts its stages' workers anew (GPU stages load their "
        "models again): larger windows cost fewer restarts and more driver memory. 0: run every "
        "row in the job's own process (one window; memory grows with the run).")

    @model_validator(mode="after")
    def _local_settings_only_for_a_local_ray(self) -> RayConfig:
        if self.address:
            given = [k for k in ("num_cpus", "num_gpus", "object_store_memory") if getattr(self, k) is not None]
            if given:
                raise ValueError(
                    f"ray.{given[0]} applies only to a local Ray started for the run; with "
                    f"ray.address={self.address} the cluster's own resources are used: unset it")
        return self


class StepsConfig(StrictModel):
    """Which steps of the method run. Probing, the duration filter and frame sampling always do."""

    short_caption: bool = Field(True, description="Step 2: a one-sentence caption per video.")
    dedup: bool = Field(
        True, description="Step 2: embed the short caption and drop semantic near-duplicates "
        "(needs short_caption).")
    keyframes: bool = Field(
        True, description="Step 3: CLIP embeddings of the sampled frames and keyframe selection; "
        "keyframe JPEGs are written under keyframes/.")
    captions: bool = Field(
        True, description="Steps 4-5: differential keyframe captions and the summary through the "
        "API in `llm` (needs keyframes). This is where the money goes.")


class StageOverride(StrictModel):
    """Per-stage resources, overriding what the operator declares."""

    batch_size: int | None = Field(None, ge=1, description="Rows per batch for this stage.")
    num_cpus: float | None = Field(None, ge=0, description="CPUs per worker.")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per worker (0 runs on CPU).")
    concurrency: tuple[int, int] | None = Field(
        None, description="(min, max) workers. Actor pools keep at least one actor while their "
        "stage runs, grow up to max as the autoscaler adds nodes, and are released when the stage "
        "is done (so GPU nodes can scale back to zero); for task stages max = most tasks at once.")
    memory_bytes: int | None = Field(None, ge=0, description="Heap memory reserved per worker.")


class RunExportConfig(StrictModel):
    """Exports the run writes at its end, after stats.json (same as `sg4v export` afterwards)."""

    formats: list[str] = Field(
        default_factory=list, description="Export formats to write when the run ends "
        "(sharegpt4video, llava, webdataset, hf); empty: none (`sg4v export` any time later). "
        "`sg4v run --export F` sets it.")
    dest: str | None = Field(
        None, description="Folder of the exports; each format goes to DEST/<format>. "
        "None: OUTPUT/exports/<format>. A rerun replaces the exports it wrote before.")
    # Not `video_token`: keys ending in `_token` are masked as secrets in config.yaml.
    llava_media: Literal["image", "video"] = Field(
        "image", description="llava: media token of the first human turn, `<image>` or `<video>` "
        "(`sg4v export --video-token`).")
    keyframe_turns: bool = Field(False, description="llava: one more turn per keyframe caption.")
    keyframes: bool = Field(False, description="Put the keyframe images in the exports too.")
    shard_size: int = Field(1000, ge=1, le=10000, description="webdataset: samples per shard.")
    archive_size: str = Field("2G", description="sharegpt4video: largest zip archive (e.g. 500M, 2G).")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        from operators.dataset.exports import FORMATS

        unknown = [f for f in value if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown export format {unknown[0]!r}; expected one of {', '.join(FORMATS)}")
        return list(dict.fromkeys(value))

    @field_validator("archive_size")
    @classmethod
    def _size(cls, value: str) -> str:
        from operators.dataset.exports.options import parse_size

        parse_size(value)
        return value


class PipelineConfig(StrictModel):
    """The whole job. See docs/configuration.md for every key."""

    input: list[SourceConfig] = Field(description="Video sources; one entry or a list.")
    output: str = Field(description="Output directory or URI (local path, s3://, gs://).")
    ray: RayConfig = Field(default_factory=RayConfig, description="Where and how Ray runs.")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="Probing of inputs.")
    filter: DurationFilterConfig = Field(
        default_factory=DurationFilterConfig, description="Duration filter (step 1).")
    frames: SampleConfig = Field(default_factory=SampleConfig, description="Frame sampling.")
    steps: StepsConfig = Field(default_factory=StepsConfig, description="Which steps run.")
    short_caption: ShortCaptionConfig = Field(
        default_factory=ShortCaptionConfig, description="Short captioner (step 2).")
    embed: TextEmbedConfig = Field(
        default_factory=TextEmbedConfig, description="Caption embedder for dedup (step 2).")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Semantic dedup (step 2).")
    clip: ClipConfig = Field(default_factory=ClipConfig, description="CLIP frame encoder (step 3).")
    keyframes: KeyframeConfig = Field(
        default_factory=KeyframeConfig, description="Keyframe selection (step 3).")
    llm: LLMConfig = Field(
        default_factory=LLMConfig, description="The vision-language API for captions (steps 4-5).")
    writer: WriterConfig = Field(default_factory=WriterConfig, description="Output files.")
    test_server: FakeServerConfig = Field(
        default_factory=FakeServerConfig,
        description="The local OpenAI-compatible test server, for smoke runs and tests: when "
        "enabled, the run starts it and sends every API call to it.")
    export: RunExportConfig = Field(
        default_factory=RunExportConfig, description="Exports written when the run ends.")
    stages: dict[str, StageOverride] = Field(
        default_factory=dict, description="Resources per stage name, e.g. stages.probe.batch_size.")

    @model_validator(mode="after")
    def _steps_fit_together(self) -> PipelineConfig:
        if self.steps.dedup and not self.steps.short_caption:
            raise ValueError("steps.dedup needs steps.short_caption: dedup compares short captions")
        if self.steps.captions and not self.steps.keyframes:
            raise ValueError("steps.captions needs steps.keyframes: captions describe keyframes")
        if self.export.formats and not self.steps.captions:
            raise ValueError("export.formats needs steps.captions: exports carry the captions")
        return self

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


def _coerce(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to the raw config dict, in place.

    The value is parsed as YAML (``3``, ``true``, ``[1, 2]``, ``null``); list entries are
    addressed by index (``input.0.path=...``).
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. frames.every_s=1.0")
    key, value = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r}: empty key")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {where} is not an index of a list of {len(node)}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"--set {key}: {where} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {key}: {last} is not an index of a list of {len(node)}")
        node[int(last)] = _coerce(value)
    elif isinstance(node, dict):
        node[last] = _coerce(value)
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is a value, not a section")


def format_validation_error(error: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in item and item["type"] not in ("missing",):
            shown = repr(item["input"])
            message = f"{message} (got {shown[:80]})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> PipelineConfig:
    """Load, override and validate a config; raises :class:`ConfigError` naming the bad key."""
    if isinstance(source, dict):
        raw, origin = copy.deepcopy(source), "dict"
    else:
        origin = str(source)
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for assignment in overrides or []:
        apply_override(raw, assignment)
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
    shard_sources = [s for s in config.input if s.kind == "webdataset"]
    if any(s.model_dump(exclude={"shards"}) != shard_sources[0].model_dump(exclude={"shards"})
           for s in shard_sources):
        raise ConfigError(f"invalid config ({origin}):\n  input: webdataset sources must share "
                          "their options (all but `shards`); list all shards in one source")
    unknown = sorted(set(config.stages) - set(stage_names()))
    if unknown:
        raise ConfigError(
            f"invalid config ({origin}):\n  stages.{unknown[0]}: unknown stage; "
            f"known stages: {', '.join(stage_names())}")
    return config


def stage_names() -> list[str]:
    from ray_jobs.pipeline import STAGE_NAMES

    return list(STAGE_NAMES)


SECRET_NAMES = ("api_key", "secret", "password", "token", "auth_token", "access_key")


def redact(data: Any) -> Any:
    """A copy of ``data`` with any secret-looking key's value masked."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            lowered = str(key).lower()
            secret = lowered in SECRET_NAMES or lowered.endswith(tuple(f"_{n}" for n in SECRET_NAMES))
            if secret and isinstance(value, str) and value:
                out[key] = "***"
            else:
                out[key] = redact(value)
        return out
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def resolved_yaml(config: PipelineConfig) -> str:
    """The resolved config as YAML, without secrets (the API key is never in the config)."""
    dumped = redact(config.model_dump(mode="json"))
    key = os.environ.get("OPENAI_API_KEY")
    text = yaml.safe_dump(dumped, sort_keys=False)
    if key and key in text:  # belt and braces: a key pasted into some free-text field
        text = text.replace(key, "***")
    return text
