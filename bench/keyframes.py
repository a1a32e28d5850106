"""The keyframe stage end to end on CPU with a tiny CLIP: where the time goes.

    python bench/keyframes.py [--clips 3] [--seconds 16] [--threads 1]

Generates 720p H.264 clips (30 fps, a hard scene cut every 3 s, a keyframe every 2 s), then
times each part of "sampled frames in, keyframes out" for all clips together:
  decode+sample   decode every frame, keep one every 2 s at 336 px short side, JPEG (a stand-in
                  for the frame sampler, to compare against)
  jpeg decode     sampled JPEGs -> RGB (ClipEncode)
  preprocess      resize/crop/normalize for the model (ClipEncode)
  encode          tiny ViT forward + L2 normalization (ClipEncode)
  select          select_keyframes (SelectKeyframes)
  re-read         seek + decode the keyframes at 1024 px from the source (SelectKeyframes)
  jpeg write      encode keyframe JPEGs and write them (SelectKeyframes)
and checks the total against the two operators called as the pipeline calls them.
Prints a markdown table; writes bench/results/keyframes_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_name  # noqa: E402  (bench/ is on sys.path when run as a script)

from operators.base import object_column  # noqa: E402
from operators.io import join, write_bytes_atomic  # noqa: E402
from operators.keyframes.clip_encoder import ClipEncode  # noqa: E402
from operators.keyframes.clip_model import ClipConfig  # noqa: E402
from operators.keyframes.operator import SelectKeyframes, keyframe_path  # noqa: E402
from operators.keyframes.reread import read_frames_at  # noqa: E402
from operators.keyframes.select import KeyframeConfig, select_keyframes  # noqa: E402
from operators.video.frames import decode_image, encode_jpeg, fit_size  # noqa: E402
from testing.media import make_video  # noqa: E402
from testing.tiny_models import save_tiny_clip  # noqa: E402

COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200), (200, 40, 200)]


def sample(path: Path, step_s: float, short_side: int) -> tuple[list[bytes], list[float]]:
    import av

    jpegs, times, target = [], [], 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = fit_size(stream.width, stream.height, short_side, 10**9)
        for frame in container.decode(stream):
            if frame.time + 1e-6 >= target:
                jpegs.append(encode_jpeg(frame.to_ndarray(format="rgb24", width=width, height=height)))
                times.append(float(frame.time))
                target += step_s
    return jpegs, times


def timed(totals: dict[str, float], key: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-keyframes-"))
    clip = ClipConfig(**save_tiny_clip(work / "clip"), device="cpu", image_batch_size=256)
    # The tiny random model's similarities are not CLIP-L's; a lower threshold gives a realistic
    # keyframe count (one per scene) on these clips.
    keyframes = KeyframeConfig(threshold=0.8)

    videos = []
    for c in range(args.clips):
        scenes = [(f, COLORS[(c + k) % len(COLORS)]) for k, f in enumerate(range(0, args.seconds * 30, 90))]
        videos.append(
            make_video(
                work / f"clip{c}.mp4",
                num_frames=args.seconds * 30,
                fps=30,
                width=1280,
                height=720,
                scenes=scenes,
                gop=60,
            )
        )

    t: dict[str, float] = {}
    sampled = [timed(t, "decode+sample", sample, v, 2.0, 336) for v in videos]
    encode = ClipEncode(clip)
    encode.setup()
    enc = encode.encoder
    embeddings = []
    for jpegs, _ in sampled:
        images = [timed(t, "jpeg decode", decode_image, j) for j in jpegs]
        pixels = timed(t, "preprocess", enc.preprocess, images)
        embeddings.append(timed(t, "encode", enc.encode, pixels))
    out_dir = work / "out"
    n_keyframes = 0
    for v, (_, times), emb in zip(videos, sampled, embeddings, strict=True):
        picked = timed(t, "select", select_keyframes, emb, times, keyframes)
        n_keyframes += len(picked)
        ts = [times[k] for k in picked]
        frames = timed(t, "re-read", read_frames_at, str(v), ts, keyframes.image_longest_side)
        for k, (stamp, rgb) in enumerate(zip(ts, frames, strict=True)):
            data = timed(t, "jpeg write", encode_jpeg, rgb, keyframes.jpeg_quality)
            timed(
                t, "jpeg write", write_bytes_atomic, join(str(out_dir), keyframe_path(v.stem, k, stamp)), data
            )

    # The same work through the two operators, as the pipeline calls them.
    batch = {
        "video_id": object_column([v.stem for v in videos]),
        "uri": object_column([str(v) for v in videos]),
        "clip_start": object_column([None] * len(videos)),
        "frames": object_column([s[0] for s in sampled]),
        "frame_timestamps": object_column([s[1] for s in sampled]),
        "width": np.array([1280] * len(videos)),
        "height": np.array([720] * len(videos)),
        "rotation": np.array([0] * len(videos)),
    }
    ops: dict[str, float] = {}
    batch = timed(ops, "ClipEncode", encode, batch)
    timed(ops, "SelectKeyframes", SelectKeyframes(keyframes, output_dir=str(work / "out2")), batch)

    n_frames = sum(len(s[0]) for s in sampled)
    total = sum(t.values())
    stage = total - t["decode+sample"]
    rows = [(k, v) for k, v in t.items()]
    print(
        f"{args.clips} clips x {args.seconds} s, 1280x720 30 fps, {n_frames} sampled frames, "
        f"{n_keyframes} keyframes, torch threads {args.threads}\n"
    )
    print("| part | seconds | % of total | ms per sampled frame |")
    print("|---|---:|---:|---:|")
    for k, v in rows:
        print(f"| {k} | {v:.3f} | {100 * v / total:.1f} | {1000 * v / n_frames:.1f} |")
    print(
        f"| keyframe stage (all but decode+sample) | {stage:.3f} | {100 * stage / total:.1f} | "
        f"{1000 * stage / n_frames:.1f} |"
    )
    for k, v in ops.items():
        print(f"| operator call: {k} | {v:.3f} | | {1000 * v / n_frames:.1f} |")

    result = {
        "machine": f"{cpu_name()}, torch threads {args.threads}",
        "clips": args.clips,
        "seconds_per_clip": args.seconds,
        "resolution": "1280x720",
        "fps": 30,
        "sampled_frames": n_frames,
        "keyframes": n_keyframes,
        "seconds": {k: round(v, 4) for k, v in t.items()},
        "keyframe_stage_seconds": round(stage, 4),
        "keyframe_stage_vs_decode": round(stage / t["decode+sample"], 3),
        "operator_seconds": {k: round(v, 4) for k, v in ops.items()},
    }
    out = Path(__file__).parent / "results" / "keyframes_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
