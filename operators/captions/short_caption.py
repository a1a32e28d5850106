"""One-sentence ``short_caption`` per video (step 2 of ShareGPT4Video), from a few uniform frames.

Backends: ``hf_image`` (GIT/BLIP/VisionEncoderDecoder image-to-text), ``hf_vlm`` (an
image-text-to-text VLM asked the Panda-70M prompt), ``panda_student`` (Panda-70M's own
captioner, installed by the user) and ``source`` (the caption the source already carries,
e.g. Panda-70M's CSV: no model, no GPU).
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any, Literal

import numpy as np
from pydantic import Field

from operators.base import Batch, Operator, Resources, batch_size_of, object_column, reject
from operators.captions.frames import uniform_indices
from operators.config import StrictModel

logger = logging.getLogger(__name__)

PANDA_PROMPT = "Please faithfully summarize the following video in one sentence."
STAGE = "short_caption"


class PandaStudentConfig(StrictModel):
    repo: str | None = Field(
        None, description="Path to a clone of snap-research/Panda-70M (or its captioning/ folder)."
    )
    checkpoint: str | None = Field(
        None,
        description="Panda-Student checkpoint; default <repo>/captioning/checkpoint/checkpoint_best.pth.",
    )
    llama_model: str | None = Field(
        None,
        description="Vicuna-7B v0 weights folder; default <repo>/captioning/vicuna_weights/vicuna-7b-v0.",
    )
    cfg_path: str | None = Field(
        None, description="Model YAML; default <repo>/captioning/eval_configs/panda70M_eval.yaml."
    )
    image_size: int = Field(224, gt=0, description="Frame size the model was trained on.")


#: Short-caption backends, one line each: name -> ``"module:factory"`` of a captioner. The
#: factory takes the stage's :class:`ShortCaptionConfig` and returns an object with ``load()``
#: (once per worker) and ``caption(videos) -> list[str]`` (``videos``: lists of RGB frames).
#: ``source`` (the row's own caption, no model) is built into the stage.
CAPTIONER_BACKENDS: dict[str, str] = {
    "hf_image": "operators.captions.hf_captioners:HFImageCaptioner",
    "hf_vlm": "operators.captions.hf_captioners:HFVLMCaptioner",
    "panda_student": "operators.captions.panda_student:from_stage_config",
}
BackendName = Literal[(*CAPTIONER_BACKENDS, "source")]  # type: ignore[valid-type]


def load_backend(name: str) -> Any:
    """The factory registered for backend ``name``."""
    module, attr = CAPTIONER_BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


class ShortCaptionConfig(StrictModel):
    backend: BackendName = Field(
        "hf_image",
        description="Which captioner writes short_caption (see operators/captions/short_caption.py).",
    )
    model: str = Field(
        "microsoft/git-base-vatex", description="Hugging Face hub id or local path (hf_image, hf_vlm)."
    )
    num_frames: int = Field(
        8, gt=0, description="Frames per video, uniformly spaced over the sampled frames."
    )
    frame_layout: Literal["auto", "video", "grid", "middle"] = Field(
        "auto",
        description="hf_image: frames as a video (GIT-VATEX), tiled in a grid, or the middle frame only.",
    )
    prompt: str = Field(PANDA_PROMPT, description="Instruction for hf_vlm and panda_student.")
    vlm_input: Literal["video", "images"] = Field(
        "video", description="hf_vlm: pass frames as one video or as images."
    )
    max_new_tokens: int = Field(48, gt=0, description="Generation length cap (Panda-70M uses 48).")
    min_new_tokens: int = Field(1, ge=0, description="Forbid ending generation before this many tokens.")
    num_beams: int = Field(1, ge=1, description="Beam search width; 1 is greedy.")
    batch_size: int = Field(8, gt=0, description="Videos per model call and per Ray batch.")
    dtype: str = Field(
        "auto", description="auto (bf16/fp16 on GPU, fp32 on CPU), float32, float16 or bfloat16."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    trust_remote_code: bool = Field(
        False, description="Allow model repos that ship their own modelling code."
    )
    prefer_source_caption: bool = Field(
        False,
        description="Model backends: keep a row's source caption when it has one and caption only the others.",
    )
    panda_student: PandaStudentConfig = Field(
        default_factory=PandaStudentConfig, description="panda_student backend."
    )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")


def one_sentence(text: str | None) -> str:
    """Model text -> one clean sentence: whitespace collapsed, cut after the first sentence,
    first letter upper-cased, a final period added when missing. Empty stays empty."""
    text = " ".join((text or "").split())
    text = _SENTENCE_END.split(text, maxsplit=1)[0].strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


class ShortCaption(Operator):
    name = STAGE
    input_columns = ("frames", "source_caption")
    output_columns = ("short_caption",)
    stateful = True

    def __init__(self, config: ShortCaptionConfig | None = None, resources: Resources | None = None) -> None:
        self.config = config or ShortCaptionConfig()
        super().__init__(self.config, resources)
        # The source backend holds no model, so it can run in a plain task pool.
        self.stateful = self.config.backend != "source"
        self.captioner: Any = None

    def default_resources(self) -> Resources:
        if self.config.backend == "source":
            return Resources(num_cpus=0.25, batch_size=256)
        return Resources(num_cpus=1, num_gpus=1, concurrency=(1, 8), batch_size=self.config.batch_size)

    def setup(self) -> None:
        cfg = self.config
        if cfg.backend == "source" or self.captioner is not None:
            return
        captioner = load_backend(cfg.backend)(cfg)
        captioner.load()
        self.captioner = captioner  # only once loaded: a failed load is retried, not half-used

    def __call__(self, batch: Batch) -> Batch:
        n = batch_size_of(batch)
        sources = batch.get("source_caption", [None] * n)
        captions: list[str | None] = [None] * n
        todo: list[int] = []
        for i in range(n):
            source = " ".join(sources[i].split()) if isinstance(sources[i], str) else ""
            if self.config.backend == "source" or (self.config.prefer_source_caption and source):
                if source:
                    captions[i] = source
                else:
                    reject(
                        batch, i, STAGE, "no_source_caption", "the source carries no caption for this video"
                    )
            else:
                todo.append(i)
        if todo:
            self._caption_rows(batch, todo, captions)
        batch["short_caption"] = object_column(captions)
        return batch

    def _caption_rows(self, batch: Batch, rows: list[int], captions: list[str | None]) -> None:
        from operators.video.frames import decode_image

        if self.captioner is None:
            self.setup()
        videos: list[list[np.ndarray]] = []
        live: list[int] = []
        for i in rows:
            frames = batch["frames"][i] if "frames" in batch else None
            picks = uniform_indices(
                len(frames) if frames is not None else 0,
                self.captioner.frame_count,
                self.captioner.exact_frames,
            )
            if not picks:
                reject(batch, i, STAGE, "no_frames", "no sampled frames to caption")
                continue
            try:
                # Writable copies: torch warns about (and must not write to) read-only PIL buffers.
                videos.append([np.array(decode_image(frames[k])) for k in picks])
            except Exception as exc:  # a corrupt JPEG is bad input, not a bug
                reject(batch, i, STAGE, "bad_frame", f"{type(exc).__name__}: {exc}")
                continue
            live.append(i)
        size = self.config.batch_size
        for start in range(0, len(live), size):
            chunk = live[start : start + size]
            texts = self.captioner.caption(videos[start : start + size])
            for i, text in zip(chunk, texts, strict=True):
                caption = one_sentence(text)
                if caption:
                    captions[i] = caption
                else:
                    reject(batch, i, STAGE, "empty_caption", f"model output: {text!r}")
