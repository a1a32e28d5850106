"""Synthetic finished outputs of any size, written the way the writer and ``select_keyframes``
write them (files of ``rows_per_file`` rows, keyframes packed into one archive per file), for
the report's and exports' memory tests and benchmarks."""

from __future__ import annotations

import io
import json
from pathlib import Path

from operators.dataset.archive import write_archive
from operators.dataset.schema import DATASET_DIR, DATASET_SCHEMA, REJECTED_DIR, REJECTED_SCHEMA
from operators.dataset.writer import parquet_bytes, to_table


def tiny_jpeg(n: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 24), (n * 37 % 256, n * 91 % 256, 120)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def write_synthetic_output(folder: Path, rows: int, rows_per_file: int = 1000,
                           keyframes_per_row: int = 3, rejected_every: int = 10) -> Path:
    """``rows`` kept videos with captions, summary and usage, and one rejected video per
    ``rejected_every`` kept ones (a tenth of them duplicates)."""
    images = [tiny_jpeg(n) for n in range(8)]
    (folder / DATASET_DIR).mkdir(parents=True, exist_ok=True)
    (folder / REJECTED_DIR).mkdir(parents=True, exist_ok=True)
    for start in range(0, rows, rows_per_file):
        ids = [f"video-{i:08d}" for i in range(start, min(rows, start + rows_per_file))]
        times = [float(2 * k) for k in range(keyframes_per_row)]
        members = [(f"{v}/{k:03d}_{int(t * 1000)}.jpg", images[(i + k) % len(images)])
                   for i, v in enumerate(ids) for k, t in enumerate(times)]
        uris = write_archive(str(folder), ids, members)
        columns = {
            "video_id": ids, "source": ["folder"] * len(ids), "uri": [f"/videos/{v}.mp4" for v in ids],
            "duration": [12.0] * len(ids), "short_caption": [f"a short caption of {v}" for v in ids],
            "keyframe_timestamps": [times] * len(ids),
            "keyframe_paths": [uris[i * len(times):(i + 1) * len(times)] for i in range(len(ids))],
            "captions": [[{"idx": k, "timestamp": t, "kind": "detailed" if k == 0 else "differential",
                           "text": f"{v} at {t:.1f}s: " + "a person walks across the room. " * 6}
                          for k, t in enumerate(times)] for v in ids],
            "summary": [f"{v}: " + "the camera follows a person through a room. " * 10 for v in ids],
            "usage": [{"calls": 4, "cached_calls": 0, "input_tokens": 3000, "output_tokens": 400,
                       "cost_usd": 0.04}] * len(ids),
        }
        table = to_table(columns, DATASET_SCHEMA)
        (folder / DATASET_DIR / f"part-{start:010d}.parquet").write_bytes(parquet_bytes(table, "zstd"))
        dropped = [f"dropped-{i:08d}" for i in range(start, start + len(ids), rejected_every)]
        reasons = ["duplicate" if j % 10 == 0 else "too_long" for j in range(len(dropped))]
        rejected = {
            "video_id": dropped, "uri": [f"/videos/{v}.mp4" for v in dropped],
            "stage": ["semantic_dedup" if r == "duplicate" else "duration_filter" for r in reasons],
            "reason": reasons,
            "detail": [json.dumps({"nearest_id": ids[0], "similarity": 0.97}) if r == "duplicate"
                       else "duration 131.000 s > max_duration_s 120.0 s" for r in reasons],
        }
        table = to_table(rejected, REJECTED_SCHEMA)
        (folder / REJECTED_DIR / f"part-{start:010d}.parquet").write_bytes(parquet_bytes(table, "zstd"))
    return folder
