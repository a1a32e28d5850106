"""Adapter for Panda-70M's captioning model ("Panda-Student"), which ShareGPT4Video used.

Its code and weights are not on PyPI: the user clones https://github.com/snap-research/Panda-70M,
installs ``captioning/requirements.txt``, downloads the checkpoint and the Vicuna-7B v0 weights
(docs/panda_student.md, step by step) and points ``short_caption.panda_student.repo`` at the clone.
This module then imports the repository's ``video_llama`` package and runs the model the way its
``captioning/inference.py`` does: 8 uniform frames, resized to 224 x 224, CLIP-normalised,
``model.inference(videos [B, C, T, H, W], prompts)``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from operators.models import resolve_device

if TYPE_CHECKING:
    from operators.captions.short_caption import PandaStudentConfig

logger = logging.getLogger(__name__)

DOCS = "docs/panda_student.md"
REPO_URL = "https://github.com/snap-research/Panda-70M"


class PandaStudentNotInstalled(ImportError):
    """The Panda-70M captioning code, its dependencies or its weights are missing."""


def _missing(problem: str) -> PandaStudentNotInstalled:
    return PandaStudentNotInstalled(
        f"short_caption backend 'panda_student' is not usable: {problem}. Clone {REPO_URL}, "
        "`pip install -r captioning/requirements.txt`, download captioning/checkpoint/checkpoint_best.pth "
        "and the Vicuna-7B v0 weights, then set short_caption.panda_student.repo to the clone "
        f"(steps in {DOCS}); or use backend hf_image, hf_vlm or source."
    )


def captioning_dir(repo: str | None) -> Path:
    """The repository's ``captioning/`` folder, given the clone's root or that folder."""
    if not repo:
        raise _missing("short_caption.panda_student.repo is not set")
    root = Path(repo).expanduser()
    for candidate in (root / "captioning", root):
        if (candidate / "video_llama").is_dir():
            return candidate.resolve()
    raise _missing(f"no captioning/video_llama package under {str(root)!r}")


def _existing(path: str | None, default: Path, what: str) -> Path:
    resolved = Path(path).expanduser() if path else default
    if not resolved.exists():
        raise _missing(f"{what} not found at {str(resolved)!r}")
    return resolved


class PandaStudentCaptioner:
    frame_count = 8
    exact_frames = True  # the model was trained on exactly 8 frames (inference.py asserts it)

    def __init__(self, config: PandaStudentConfig, prompt: str, device: str = "auto") -> None:
        self.config = config
        self.prompt = prompt
        self.device_name = device
        self.model: Any = None

    def load(self) -> None:
        cfg = self.config
        root = captioning_dir(cfg.repo)
        cfg_path = _existing(cfg.cfg_path, root / "eval_configs" / "panda70M_eval.yaml", "eval config")
        checkpoint = _existing(cfg.checkpoint, root / "checkpoint" / "checkpoint_best.pth", "checkpoint")
        vicuna = _existing(cfg.llama_model, root / "vicuna_weights" / "vicuna-7b-v0", "Vicuna-7B v0 weights")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        try:
            from video_llama.common.config import Config
            from video_llama.common.registry import registry
        except ImportError as exc:  # a requirement of the repository is not installed
            raise _missing(f"importing video_llama from {str(root)!r} failed ({exc})") from exc

        import torch

        self.device = resolve_device(self.device_name)
        args = _Args(
            cfg_path=str(cfg_path), options=[f"model.ckpt={checkpoint}", f"model.llama_model={vicuna}"]
        )
        model_cfg = Config(args).model_cfg
        model = registry.get_model_class(model_cfg.arch).from_config(model_cfg)
        self.model = model.to(self.device).eval()
        processor_cfg = {"name": "alpro_video_eval", "n_frms": self.frame_count, "image_size": cfg.image_size}
        self.vis_processor = registry.get_processor_class(processor_cfg["name"]).from_config(processor_cfg)
        self._torch = torch
        logger.info("loaded Panda-Student from %s on %s", root, self.device)

    def caption(self, videos: list[list[np.ndarray]]) -> list[str]:
        torch = self._torch
        clips = []
        for frames in videos:
            clip = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float()  # T,H,W,C -> C,T,H,W
            clips.append(self.vis_processor.transform(clip))
        with torch.inference_mode():
            return list(self.model.inference(torch.stack(clips).to(self.device), [self.prompt] * len(clips)))


class _Args:
    """The argparse namespace that video_llama's Config reads."""

    def __init__(self, cfg_path: str, options: list[str]) -> None:
        self.cfg_path = cfg_path
        self.options = options


def from_stage_config(config: Any) -> PandaStudentCaptioner:
    """The ``panda_student`` backend of the short-caption stage (``CAPTIONER_BACKENDS``)."""
    return PandaStudentCaptioner(config.panda_student, config.prompt, config.device)
