"""Clip files: CPU seconds per second of clip, re-encoded (libx264 + AAC) and stream-copied.

    python bench/clips.py [--quick] [--repeat N] [--out bench/results/clips.json]

Sources: generated 60 s H.264 files at 720p and 1080p, 30 fps (x264 veryfast crf 23, a moving
noise texture, as bench/decode.py makes them; with a stereo AAC track), and the real
cockatoo.mp4 (720p, MP3 audio) when .cache/real_videos has it. For each, spans of 5, 10 and 20 s
starting mid-GOP (7.3 s) are cut by the `clip_files` stage's per-row code (`CutClips.cut_file`,
default writer config: crf 18, preset veryfast, one thread; `copy` falls back to re-encoding
where the stage does, shown as `made_by`), into a temporary folder. Timed: CPU time of this process (`time.process_time`: all threads, so a multi-threaded
encoder could not hide its cost), best of ``--repeat``. Figure = CPU seconds / clip seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from decode import make_clip  # noqa: E402  (bench/ is on sys.path when run as a script)
from machine import cpu_name  # noqa: E402

from operators.dataset.writer import WriterConfig  # noqa: E402
from operators.video.clips import CutClips  # noqa: E402

REAL = ROOT / ".cache" / "real_videos"


def add_audio(video: Path, dest: Path) -> Path:
    """``video`` with a stereo AAC track (a 440 Hz tone) as long as the video."""
    import av

    with av.open(str(video)) as src, av.open(str(dest), "w") as out:
        v_in = src.streams.video[0]
        v_out = out.add_stream_from_template(v_in)
        a_out = out.add_stream("aac", rate=48000, layout="stereo")
        seconds = float(v_in.duration * v_in.time_base)
        for packet in src.demux(v_in):
            if packet.dts is not None:
                packet.stream = v_out
                out.mux(packet)
        t = np.arange(1024) / 48000
        for i in range(int(seconds * 48000 / 1024)):
            tone = np.sin(2 * np.pi * 440 * (t + i * 1024 / 48000)).astype(np.float32) * 0.2
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, i * 1024
            out.mux(a_out.encode(frame))
        out.mux(a_out.encode(None))
    return dest


def best_cpu(fn, repeat: int) -> tuple[float, float, object]:
    best_c = best_w = float("inf")
    result = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        best_c, best_w = min(best_c, time.process_time() - c0), min(best_w, time.perf_counter() - w0)
    return best_c, best_w, result


def bench_source(path: Path, spans: list[float], repeat: int, tmp: Path) -> list[dict]:
    rows = []
    for length in spans:
        start = 7.3  # mid-GOP: x264 keyframes are every 250 frames or at scene cuts
        end = start + length
        for mode in ("reencode", "copy"):
            dest = str(tmp / f"{path.stem}-{mode}-{length}.mp4")
            # What the stage does per row, fallbacks included (copy -> reencode).
            stage = CutClips(WriterConfig(clips=mode), output=str(tmp))
            fn = partial(stage.cut_file, str(path), start, end, dest, 0)
            cpu, wall, cut = best_cpu(fn, repeat)
            rows.append({"source": path.name, "mode": mode, "made_by": cut.mode,
                         "clip_s": round(cut.duration, 3),
                         "frames": cut.frames, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4),
                         "cpu_s_per_clip_s": round(cpu / cut.duration, 4),
                         "size_mb": round(Path(dest).stat().st_size / 1e6, 3)})
    return rows


def table(rows: list[dict]) -> str:
    cols = ["source", "mode", "made_by", "clip_s", "frames", "cpu_s", "wall_s", "cpu_s_per_clip_s", "size_mb"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s sources, 5 s spans only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "clips.json"))
    args = parser.parse_args()
    seconds, spans = (30.0, [5.0]) if args.quick else (60.0, [5.0, 10.0, 20.0])
    rows = []
    with tempfile.TemporaryDirectory(prefix="sg4v-bench-clips-") as tmp_name:
        tmp = Path(tmp_name)
        for name, (w, h) in {"720p": (1280, 720), "1080p": (1920, 1080)}.items():
            video = make_clip(tmp / f"gen_{name}_noaudio.mp4", w, h, Fraction(30), seconds)
            rows += bench_source(add_audio(video, tmp / f"gen_{name}30.mp4"), spans, args.repeat, tmp)
        if (REAL / "cockatoo.mp4").is_file():
            rows += bench_source(REAL / "cockatoo.mp4", [5.0], args.repeat, tmp)
    print(table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": cpu_name(), "python": platform.python_version(),
                                          "argv": sys.argv[1:], "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
