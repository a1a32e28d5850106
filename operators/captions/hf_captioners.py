"""Hugging Face captioning models behind one small interface.

A captioner has ``load()`` (once per worker), ``frame_count`` / ``exact_frames`` (how many
frames of a video it wants) and ``caption(videos) -> list[str]`` for a batch of videos, each
a list of HxWx3 uint8 RGB frames. Raw model text comes back; the operator post-processes it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from operators.captions.frames import frame_grid
from operators.models import load_pretrained, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from operators.captions.short_caption import ShortCaptionConfig

logger = logging.getLogger(__name__)

WHAT = "short_caption"


class _HFCaptioner:
    frame_count: int
    exact_frames: bool = False

    def __init__(self, config: ShortCaptionConfig) -> None:
        self.config = config
        self.model: Any = None

    def _load_model(self) -> None:
        from transformers import AutoModelForImageTextToText

        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.model = load_pretrained(
            AutoModelForImageTextToText.from_pretrained,
            cfg.model,
            WHAT,
            dtype=self.dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
        self.model.to(self.device).eval()
        logger.info("loaded captioner %s on %s (%s)", cfg.model, self.device, self.dtype)

    def _generate(self, inputs: dict[str, Any]) -> Any:
        import torch

        cfg = self.config
        for key, value in inputs.items():
            if torch.is_tensor(value):
                value = value.to(self.device)
                inputs[key] = value.to(self.dtype) if value.is_floating_point() else value
        with torch.inference_mode():
            return self.model.generate(
                **inputs,
                max_new_tokens=cfg.max_new_tokens,
                min_new_tokens=cfg.min_new_tokens,
                num_beams=cfg.num_beams,
                do_sample=False,
            )


class HFImageCaptioner(_HFCaptioner):
    """Image-to-text models (GIT, BLIP, VisionEncoderDecoder) that take pixels and no prompt.

    Frame layouts: ``video`` feeds frames as ``[B, T, C, H, W]`` to models with temporal
    embeddings (GIT fine-tuned on VATEX: T = ``num_image_with_embedding``); ``grid`` tiles
    the frames into one image; ``middle`` captions the middle frame only. ``auto`` picks
    ``video`` when the model has temporal embeddings, else ``grid``.
    """

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        cfg = self.config
        self._load_model()
        self.image_processor = load_pretrained(
            AutoImageProcessor.from_pretrained, cfg.model, WHAT, trust_remote_code=cfg.trust_remote_code
        )
        self.tokenizer = load_pretrained(
            AutoTokenizer.from_pretrained, cfg.model, WHAT, trust_remote_code=cfg.trust_remote_code
        )
        temporal = getattr(self.model.config, "num_image_with_embedding", None)
        layout = cfg.frame_layout
        if layout == "auto":
            layout = "video" if temporal else "grid"
        if layout == "video" and not temporal:
            raise ValueError(
                f"short_caption.frame_layout=video needs a model with temporal embeddings "
                f"(num_image_with_embedding); {cfg.model!r} has none: use grid or middle"
            )
        self.layout = layout
        if layout == "video":
            self.frame_count, self.exact_frames = int(temporal), True
            if temporal != cfg.num_frames:
                logger.info(
                    "%s takes %d frames per video (num_frames=%d ignored)",
                    cfg.model,
                    temporal,
                    cfg.num_frames,
                )
        elif layout == "middle":
            self.frame_count = 1
        else:
            self.frame_count = cfg.num_frames

    def _pixels(self, images: list[np.ndarray]) -> Any:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def caption(self, videos: list[list[np.ndarray]]) -> list[str]:
        import torch

        if self.layout == "video":
            pixel_values = torch.stack([self._pixels(frames) for frames in videos])
        elif self.layout == "grid":
            pixel_values = self._pixels([frame_grid(frames) for frames in videos])
        else:
            pixel_values = self._pixels([frames[len(frames) // 2] for frames in videos])
        ids = self._generate({"pixel_values": pixel_values})
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)


class HFVLMCaptioner(_HFCaptioner):
    """Image-text-to-text VLMs (LLaVA-NeXT-Video, Qwen2.5-VL, LLaVA...) asked ``prompt``
    through their chat template, with the frames as one video or as a list of images."""

    def load(self) -> None:
        from transformers import AutoProcessor

        cfg = self.config
        self._load_model()
        self.processor = load_pretrained(
            AutoProcessor.from_pretrained, cfg.model, WHAT, trust_remote_code=cfg.trust_remote_code
        )
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation continues on the right
        self.frame_count = cfg.num_frames

    def _prompt_text(self, num_frames: int) -> str:
        cfg = self.config
        if cfg.vlm_input == "video":
            visual: list[dict[str, str]] = [{"type": "video"}]
        else:
            visual = [{"type": "image"} for _ in range(num_frames)]
        messages = [{"role": "user", "content": [*visual, {"type": "text", "text": cfg.prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def caption(self, videos: list[list[np.ndarray]]) -> list[str]:
        texts = [self._prompt_text(len(frames)) for frames in videos]
        if self.config.vlm_input == "video":
            visual = {"videos": [np.stack(frames) for frames in videos]}
        else:
            visual = {"images": [list(frames) for frames in videos]}
        inputs = dict(self.processor(text=texts, padding=True, return_tensors="pt", **visual))
        prompt_len = inputs["input_ids"].shape[1]
        ids = self._generate(inputs)
        return self.processor.batch_decode(ids[:, prompt_len:], skip_special_tokens=True)
