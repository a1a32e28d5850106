"""CLIP image-encoder throughput and model FLOPs utilization (MFU).

GPU (the number that matters):
    python bench/clip.py --device cuda --model ViT-L-14-336 --batch 256 --precision bf16
CPU smoke run with a tiny random model:
    python bench/clip.py --tiny

Weights do not change the speed, so the model is built with random weights (no download).
Images/s counts the forward pass, the L2 normalization and the copy of embeddings to the host
(what ClipImageEncoder.encode does), on pre-made pixel tensors. Model FLOPs per image come from
torch.utils.flop_counter (checked against the analytic ViT count) and MFU = FLOPs/image x
images/s / peak FLOPs of the device. Prints a markdown table; writes bench/results/clip_*.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from machine import cpu_name  # noqa: E402  (bench/ is on sys.path when run as a script)

from operators.keyframes.clip_model import ClipConfig, ClipImageEncoder  # noqa: E402

# Dense peak TFLOPS (bf16/fp16 tensor cores, no sparsity) from the vendors' data sheets.
PEAK_TFLOPS = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM / HBM3
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
]


def peak_tflops(device_name: str, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if precision not in ("bf16", "fp16"):
        return None
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def analytic_vit_flops(vision_cfg: dict, embed_dim: int) -> float:
    """Forward FLOPs (2 x multiply-adds) of an open_clip ViT image tower for one image."""
    size, patch, width = vision_cfg["image_size"], vision_cfg["patch_size"], vision_cfg["width"]
    layers, ratio = vision_cfg["layers"], vision_cfg.get("mlp_ratio", 4.0)
    patches = (size // patch) ** 2
    tokens = patches + 1
    per_layer = 2 * tokens * width * width * (4 + 2 * ratio) + 2 * 2 * tokens * tokens * width
    return patches * 2 * 3 * patch * patch * width + layers * per_layer + 2 * width * embed_dim


def counted_flops(encoder: ClipImageEncoder, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=encoder.device)
    counter = FlopCounterMode(display=False)
    # With autograd on, nn.MultiheadAttention skips its fused inference kernel, which the
    # counter cannot see into (it would miss all attention FLOPs, 40% of ViT-L's).
    with torch.enable_grad(), counter:
        encoder.model.encode_image(x)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="ViT-L-14-336")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--feature", default="cls", choices=["cls", "embed"],
                        help="clip.feature ('auto' precision is fp32 for cls, bf16 on CUDA for embed)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the image tower")
    parser.add_argument("--tiny", action="store_true", help="tiny random ViT (CPU smoke run)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device's peak")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/clip_<...>.json)")
    args = parser.parse_args()

    import open_clip
    import torch

    model = args.model
    if args.tiny:
        from testing.tiny_models import save_tiny_clip

        model = save_tiny_clip(Path(tempfile.mkdtemp()))["model"]
    config = ClipConfig(
        model=model,
        pretrained=None,
        device=args.device,
        precision=args.precision,
        feature=args.feature,
        image_batch_size=args.batch,
        compile=args.compile,
    )
    encoder = ClipImageEncoder(config)
    model_cfg = open_clip.get_model_config(model)
    size = model_cfg["vision_cfg"]["image_size"]
    flops = counted_flops(encoder, size)
    analytic = analytic_vit_flops(model_cfg["vision_cfg"], model_cfg["embed_dim"])

    pixels = torch.randn(args.batch, 3, size, size, device=encoder.device)
    on_cuda = encoder.device.startswith("cuda")
    for _ in range(args.warmup):
        encoder.encode(pixels)
    if on_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.iters):
        encoder.encode(pixels)  # ends with a copy to the host, so each call is synchronous
    seconds = time.perf_counter() - start
    images_per_s = args.batch * args.iters / seconds

    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[encoder.dtype]
    device_name = torch.cuda.get_device_name(encoder.device) if on_cuda else cpu_name()
    peak = peak_tflops(device_name, precision, args.peak_tflops)
    achieved = flops * images_per_s / 1e12
    result = {
        "model": args.model if not args.tiny else "tiny ViT (width 64, 2 layers, patch 16, 64 px)",
        "device": device_name,
        "torch_threads": torch.get_num_threads(),
        "feature": args.feature,
        "precision": precision,
        "compile": args.compile,
        "batch": args.batch,
        "images_per_s": round(images_per_s, 1),
        "gflops_per_image": float(f"{flops / 1e9:.4g}"),
        "gflops_per_image_analytic": float(f"{analytic / 1e9:.4g}"),
        "achieved_tflops": float(f"{achieved:.4g}"),
        "peak_tflops": peak,
        "mfu": round(achieved / peak, 3) if peak else None,
        "torch": torch.__version__,
    }
    print("| " + " | ".join(result) + " |")
    print("|" + "---|" * len(result))
    print("| " + " | ".join(str(v) for v in result.values()) + " |")
    out = (
        Path(args.out)
        if args.out
        else (
            Path(__file__).parent
            / "results"
            / f"clip_{'cuda' if on_cuda else 'cpu'}_{'tiny' if args.tiny else args.model}.json"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
