"""A small finished output folder, written the way the writer writes it, for export/report tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from operators.dataset.schema import DATASET_SCHEMA, REJECTED_SCHEMA
from operators.dataset.writer import parquet_bytes, to_table

COLORS = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 180, 30)]


def jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, format="JPEG", quality=90)
    return out.getvalue()


def video(video_id: str, times: list[float], captioned: bool = True, clip: tuple | None = None) -> dict:
    paths = [f"keyframes/{video_id}/{i:03d}_{round(t * 1000)}.jpg" for i, t in enumerate(times)]
    captions = [{"idx": i, "timestamp": t, "kind": "detailed" if i == 0 else "differential",
                 "text": f"{video_id} caption {i} at {t:.2f}s"} for i, t in enumerate(times)]
    usage = {"calls": len(times) + 1, "cached_calls": 0, "input_tokens": 1000 * (len(times) + 1),
             "output_tokens": 100 * (len(times) + 1), "cost_usd": 0.0125 * (len(times) + 1)}
    return {
        "video_id": video_id, "source": "folder", "uri": f"/videos/{video_id}.mp4",
        "clip_start": clip[0] if clip else None, "clip_end": clip[1] if clip else None,
        "duration": (clip[1] - clip[0]) if clip else times[-1] + 1.0,
        "short_caption": f"short caption of {video_id}",
        "keyframe_indices": list(range(len(times))), "keyframe_timestamps": times, "keyframe_paths": paths,
        "captions": captions if captioned else None,
        "summary": f"Summary of {video_id}: things happen." if captioned else None,
        "usage": usage if captioned else None,
    }


VIDEOS = [
    video("alpha", [0.0, 4.0, 8.5]),
    video("beta", [0.0]),
    video("clip.7", [0.0, 2.5], clip=(10.0, 16.0)),
    video("gamma", [0.0, 6.0, 10.0, 14.0]),
]
UNCAPTIONED = video("pending", [0.0, 3.0], captioned=False)
REJECTED = [
    {"video_id": "alpha_copy", "uri": "/videos/alpha_copy.mp4", "stage": "semantic_dedup", "reason": "duplicate",
     "detail": json.dumps({"nearest_id": "alpha", "similarity": 0.9712})},
    {"video_id": "long", "uri": "/videos/long.mp4", "stage": "duration_filter", "reason": "too_long",
     "detail": "duration 131.000 s > max_duration_s 120.0 s"},
    {"video_id": "junk1", "uri": "/videos/junk1.mp4", "stage": "probe", "reason": "not_a_video", "detail": "x"},
    {"video_id": "junk2", "uri": "/videos/junk2.mp4", "stage": "probe", "reason": "not_a_video", "detail": "y"},
]


def _columns(rows: list[dict], drop: tuple[str, ...] = ()) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in rows[0] if k not in drop}


def pack_keyframes(folder: Path, rows: list[dict]) -> list[dict]:
    """``rows`` with their keyframes packed into one archive, as ``select_keyframes`` writes
    them by default (``keyframes.packing: archive``): paths become byte-range URIs."""
    from operators.dataset.archive import write_archive

    members = [(path.split("/", 1)[1], jpeg(COLORS[(n + i) % len(COLORS)]))
               for n, row in enumerate(rows) for i, path in enumerate(row["keyframe_paths"])]
    uris = iter(write_archive(str(folder), [r["video_id"] for r in rows], members))
    return [{**row, "keyframe_paths": [next(uris) for _ in row["keyframe_paths"]]} for row in rows]


def write_output(folder: Path, videos: list[dict] | None = None, packed: bool = False) -> Path:
    """Two dataset files (the second from before the API stage existed: no caption columns),
    one rejected file, the keyframe JPEGs (one file each, or one archive when ``packed``) and a
    stats.json."""
    videos = VIDEOS if videos is None else videos
    (folder / "dataset").mkdir(parents=True)
    if packed:
        *videos, uncaptioned = pack_keyframes(folder, [*videos, UNCAPTIONED])
        _write_tables(folder, videos, uncaptioned)
        return folder
    _write_tables(folder, videos, UNCAPTIONED)
    for n, row in enumerate([*videos, UNCAPTIONED]):
        for i, path in enumerate(row["keyframe_paths"]):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(jpeg(COLORS[(n + i) % len(COLORS)]))
    return folder


def _write_tables(folder: Path, videos: list[dict], uncaptioned: dict) -> None:
    (folder / "rejected").mkdir()
    if videos:
        table = to_table(_columns(videos), DATASET_SCHEMA)
        (folder / "dataset" / "part-1.parquet").write_bytes(parquet_bytes(table, "zstd"))
    early = to_table(_columns([uncaptioned], drop=("captions", "summary", "usage")), DATASET_SCHEMA)
    (folder / "dataset" / "part-2.parquet").write_bytes(parquet_bytes(early, "zstd"))
    rejected = to_table(_columns(REJECTED), REJECTED_SCHEMA)
    (folder / "rejected" / "part-1.parquet").write_bytes(parquet_bytes(rejected, "zstd"))
    (folder / "stats.json").write_text(json.dumps({"inputs": 9, "kept": 5, "rejected": 4, "wall_seconds": 12.5}))
