"""Small helpers shared by every operator that loads a neural model.

They pick the device and the compute dtype from config strings and turn the many ways a
``from_pretrained`` call can fail into one clear error that names the model, so a bad path
fails at ``setup()`` instead of surfacing later as a confusing stack trace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


class ModelLoadError(RuntimeError):
    """A model, tokenizer or processor could not be loaded from the configured name or path."""


def resolve_device(name: str = "auto") -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is visible (then ``"mps"``), else ``"cpu"``.

    Any other value (``"cpu"``, ``"cuda"``, ``"cuda:1"``) is returned as given; asking for
    CUDA on a machine without it is a config error and raises.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but no CUDA GPU is visible")
    return name


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``"auto"``: bfloat16 on a GPU that supports it, else float16 on CUDA; float32 on CPU
    (half precision on CPU is slow and lossy). Explicit names: float32/fp32, float16/fp16,
    bfloat16/bf16."""
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return getattr(torch, _DTYPES[name.lower()])
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16") from None


def looks_like_local_path(name: str) -> bool:
    """True for names that can only be a local path (``/x``, ``./x``, ``~/x``, ``C:\\x``),
    as opposed to a hub id such as ``org/model``."""
    return name.startswith(("/", "./", "../", "~", "\\")) or (len(name) > 1 and name[1] == ":")


def check_model_path(name: str, what: str) -> None:
    """Fail at once, with the path in the message, when a local model path does not exist.

    Without this check ``from_pretrained`` would treat the missing path as a hub id and,
    offline, either raise an unrelated validation error or wait for network timeouts.
    """
    if looks_like_local_path(name) and not os.path.exists(os.path.expanduser(name)):
        raise ModelLoadError(f"{what}: model path {name!r} does not exist")


def load_pretrained(loader: Callable[..., T], name: str, what: str, **kwargs: Any) -> T:
    """Call ``loader(name, **kwargs)`` (a ``from_pretrained``) and re-raise any failure as a
    :class:`ModelLoadError` naming ``what`` and the model ``name``."""
    check_model_path(name, what)
    try:
        return loader(os.path.expanduser(name), **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, HF hub errors...
        raise ModelLoadError(
            f"{what}: could not load {name!r} with {getattr(loader, '__qualname__', loader)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
