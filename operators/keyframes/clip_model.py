"""An open_clip image encoder: loading, preprocessing and batched, L2-normalized features.

Kept apart from the operator so the benchmark and the calibration command use the same code.
Frames are RGB uint8 arrays throughout; ``channel_order: bgr`` swaps them just before the model,
as the official code did by feeding OpenCV's BGR frames to CLIP. Which feature comes out
(``cls`` or ``embed``) is :mod:`operators.keyframes.clip_features`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from operators.config import StrictModel
from operators.keyframes.clip_features import Feature, check_cls_support, feature_dim, residual_cls

logger = logging.getLogger(__name__)


class ClipConfig(StrictModel):
    """The CLIP image encoder (config key ``clip``)."""

    model: str = Field(
        "ViT-L-14-336",
        description="open_clip model name (`open_clip.list_models()`), or 'hf-hub:ORG/REPO' or "
        "'local-dir:PATH' as open_clip accepts them.",
    )
    pretrained: str | None = Field(
        "openai",
        description="open_clip pretrained tag (e.g. 'openai', 'laion2b_s32b_b82k') or the path of "
        "a local checkpoint file; None for random weights (tests only).",
    )
    model_config_path: str | None = Field(
        None,
        description="Optional open_clip model config JSON file (or a directory of them) to "
        "register before loading, for architectures open_clip does not ship.",
    )
    cache_dir: str | None = Field(
        None, description="Where open_clip looks for / downloads pretrained weights."
    )
    device: str = Field(
        "auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1'..."
    )
    feature: Feature = Field(
        "cls",
        description="What keyframe selection compares. 'cls': the last layer's class token before "
        "ln_post and the projection (CLIPVisionModel hidden_states[-1][:, 0], 1024-d for "
        "ViT-L/14), the feature the paper's 0.93 threshold was set on. 'embed': open_clip's "
        "encode_image (normalized projection, 768-d); needs another threshold "
        "(`sg4v calibrate-keyframes` prints the matching one). 'cls' needs a ViT with token pooling.",
    )
    channel_order: Literal["rgb", "bgr"] = Field(
        "rgb",
        description="Channel order the model sees. 'rgb': correct colours. 'bgr': red and blue "
        "swapped, as the released keyframe code fed OpenCV frames to CLIP; with feature 'cls' it "
        "reproduces that code's similarities.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="'auto': fp32 for feature 'cls' (as the released code); for 'embed' bf16 "
        "autocast on CUDA, fp32 on CPU. bf16/fp16 use autocast (CUDA only).",
    )
    image_batch_size: int = Field(
        256, ge=1, description="Images per forward pass; frames of all videos in a batch are pooled."
    )
    preprocess: Literal["auto", "model", "tensor"] = Field(
        "auto",
        description="'model': the model's own PIL transform, image by image. 'tensor': the same "
        "resize/crop/normalize done batched on uint8 tensors on the model's device (matches "
        "'model' to within 2 of 255 levels per pixel). 'auto': 'tensor' when the model's transform is the "
        "standard resize + center crop + normalize, else 'model'.",
    )
    compile: bool = Field(False, description="torch.compile the image tower (CUDA; slow first batch).")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ClipImageEncoder:
    """Loads the model once; ``embed(images)`` returns float32 [n, d] unit-norm rows."""

    def __init__(self, config: ClipConfig) -> None:
        import open_clip
        import torch

        self.config = config
        self.device = resolve_device(config.device)
        if config.model_config_path:
            open_clip.add_model_config(config.model_config_path)
        try:
            model, _, transform = open_clip.create_model_and_transforms(
                config.model, pretrained=config.pretrained, device=self.device, cache_dir=config.cache_dir
            )
        except Exception as exc:
            raise RuntimeError(
                f"could not load CLIP model {config.model!r} with pretrained={config.pretrained!r} "
                f"on {self.device}: {exc}"
            ) from exc
        self.model = model.eval()
        self.transform = transform
        self.dtype = self._autocast_dtype(torch)
        self.tensor_steps = _tensor_steps(transform)
        mode = config.preprocess
        if mode == "auto":
            mode = "tensor" if self.tensor_steps is not None else "model"
        elif mode == "tensor" and self.tensor_steps is None:
            raise ValueError(f"preprocess='tensor' does not support this model's transform: {transform}")
        self.preprocess_mode = mode
        self._forward = self._cls if config.feature == "cls" else self.model.encode_image
        if config.feature == "cls":
            check_cls_support(self.model.visual)
        if config.compile:
            self._forward = torch.compile(self._forward)
        logger.info(
            "CLIP %s/%s on %s, feature=%s, %s, autocast=%s, preprocess=%s",
            config.model,
            config.pretrained,
            self.device,
            config.feature,
            config.channel_order,
            self.dtype,
            mode,
        )

    def _cls(self, pixels: Any) -> Any:
        return residual_cls(self.model.visual, pixels)

    def _autocast_dtype(self, torch: Any) -> Any:
        precision = self.config.precision
        on_cuda = self.device.startswith("cuda")
        if precision == "auto":
            # The class-token feature stays in fp32, as the threshold was set on it.
            return torch.bfloat16 if on_cuda and self.config.feature == "embed" else None
        if precision == "fp32":
            return None
        if not on_cuda:
            raise ValueError(f"precision={precision!r} needs a CUDA device, got {self.device!r}")
        return torch.bfloat16 if precision == "bf16" else torch.float16

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        """RGB uint8 HxWx3 arrays -> a float [n, 3, S, S] tensor on the model's device."""
        import torch

        if self.config.channel_order == "bgr":
            images = [np.ascontiguousarray(im[..., ::-1]) for im in images]

        if self.preprocess_mode == "model":
            from PIL import Image

            batch = torch.stack([self.transform(Image.fromarray(im, mode="RGB")) for im in images])
            return batch.to(self.device, non_blocking=True)
        return _tensor_preprocess(images, self.tensor_steps, self.device)

    def encode(self, pixels: Any) -> np.ndarray:
        """Preprocessed tensor -> float32 [n, d] L2-normalized features (``config.feature``)."""
        import torch

        autocast = (
            torch.autocast(device_type="cuda", dtype=self.dtype)
            if self.dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            features = self._forward(pixels)
        features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed any number of RGB frames, ``image_batch_size`` at a time."""
        size = self.config.image_batch_size
        parts = [self.encode(self.preprocess(images[i : i + size])) for i in range(0, len(images), size)]
        if not parts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.concatenate(parts)

    @property
    def embed_dim(self) -> int:
        return feature_dim(self.model, self.config.feature)


def _tensor_steps(transform: Any) -> dict[str, Any] | None:
    """Read resize size, crop size, interpolation and mean/std off a standard open_clip eval
    transform; None when it holds anything else (then only the PIL path is exact)."""
    from torchvision import transforms as T

    steps: dict[str, Any] = {}
    for t in getattr(transform, "transforms", []):
        kind = type(t).__name__
        if isinstance(t, T.Resize) and "resize" not in steps:
            if not isinstance(t.size, int) and len(t.size) != 1:
                return None  # a squash resize to (h, w)
            steps["resize"] = t.size if isinstance(t.size, int) else t.size[0]
            steps["interpolation"] = t.interpolation
        elif isinstance(t, T.CenterCrop) and "crop" not in steps:
            steps["crop"] = tuple(t.size)
        elif isinstance(t, T.Normalize):
            steps["mean"], steps["std"] = tuple(t.mean), tuple(t.std)
        elif kind in ("MaybeConvertMode", "MaybeToTensor", "ToTensor") or kind.startswith("_convert"):
            continue
        else:
            return None
    return steps if {"resize", "crop", "mean"} <= steps.keys() else None


def _tensor_preprocess(images: Sequence[np.ndarray], steps: dict[str, Any], device: str) -> Any:
    """Resize (shortest side, antialiased), center crop and normalize, one stacked call per
    frame size (frames of one video share a size). On CPU the uint8 kernels match PIL to within
    2 levels (mean 6e-5 after normalization) at half PIL's time; on CUDA it runs in float."""
    import torch
    from torchvision.transforms.v2 import functional as F

    mean = torch.tensor(steps["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(steps["std"], device=device).view(1, 3, 1, 1)
    out: list[Any] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    on_cpu = torch.device(device).type == "cpu"
    for indices in groups.values():
        x = torch.from_numpy(np.stack([images[i] for i in indices])).to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)
        if not on_cpu:
            x = x.float()  # antialiased bicubic on uint8 is a CPU-only kernel
        x = F.resize(x, [steps["resize"]], interpolation=steps["interpolation"], antialias=True)
        x = F.center_crop(x, list(steps["crop"]))
        if not on_cpu:
            x = x.clamp_(0, 255).round_()  # PIL rounds and clamps after resampling
        x = (x.float() / 255.0 - mean) / std
        for j, i in enumerate(indices):
            out[i] = x[j]
    return torch.stack(out)
