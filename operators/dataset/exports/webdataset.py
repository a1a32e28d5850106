"""``webdataset``: shards in video2dataset's layout, which its own dataloader reads.

    DIR/00000.tar  DIR/00000.parquet  DIR/00000_stats.json  DIR/00001.tar ...

A sample is keyed ``SSSSSIIII`` (shard, then sample in shard, as video2dataset numbers them)
and holds ``{key}.mp4`` (the clip), ``{key}.txt`` (the summary: video2dataset's dataloader
keeps only samples with both ``mp4`` and ``txt``) and ``{key}.json`` (every caption with its
timestamp, the ids, the source uri and clip bounds, API usage); with ``--keyframes`` also
``{key}.000.jpg``, ``{key}.001.jpg``, ... A video that is not an MP4 is remuxed into one (its
packets copied; re-encoded when MP4 cannot carry its codec), so ``mp4`` never holds another
container. Beside each tar, the Parquet of its samples' metadata and the stats video2dataset
writes. Each shard is written once complete; nothing but one shard is held at a time.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from operators.dataset import schema as col
from operators.dataset.exports.dest import Destination
from operators.dataset.exports.media import clip_duration, clip_file_offset, extension
from operators.dataset.exports.options import ExportOptions
from operators.dataset.exports.rows import Tally, rows_with_video, sorted_captions
from operators.io import file_size, join, open_binary

logger = logging.getLogger(__name__)

PARQUET_SCHEMA = pa.schema([
    ("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()),
    ("url", pa.string()), ("caption", pa.string()), ("video_id", pa.string()),
    ("clip_start", pa.float64()), ("clip_end", pa.float64()), ("duration", pa.float64()),
])


def sample_key(shard: int, index: int) -> str:
    return f"{shard:05d}{index:04d}"


def sample_json(row: dict[str, Any], key: str) -> dict[str, Any]:
    """``{key}.json``: what a trainer needs besides the video and the summary."""
    captions = [{"idx": c[col.CAPTION_IDX], "timestamp": c[col.CAPTION_TIMESTAMP],
                 "kind": c[col.CAPTION_KIND], "text": c[col.CAPTION_TEXT]} for c in sorted_captions(row)]
    return {"key": key, "video_id": row[col.VIDEO_ID], "source": row.get(col.SOURCE),
            "url": row[col.URI], "clip_start": row.get(col.CLIP_START), "clip_end": row.get(col.CLIP_END),
            "duration": clip_duration(row), "clip_file_offset": clip_file_offset(row),
            "short_caption": row.get(col.SHORT_CAPTION), "summary": row[col.SUMMARY],
            "keyframe_timestamps": list(row.get(col.KEYFRAME_TIMESTAMPS) or []),
            "captions": captions, "usage": row.get(col.USAGE)}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, uri: str) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = int(file_size(uri) or 0), int(time.time())
    with open_binary(uri) as f:
        tar.addfile(info, f)


def _as_mp4(uri: str, tmp_dir: str) -> str:
    """``uri`` itself when it is an MP4, else a local MP4 remux of it."""
    if extension(uri) in (".mp4", ".m4v"):
        return uri
    from operators.video.cut import cut_copy, cut_reencode

    path = os.path.join(tmp_dir, "remux.mp4")
    try:
        cut_copy(uri, 0.0, float("inf"), path)
    except Exception:  # noqa: BLE001 - a codec MP4 cannot carry: re-encode instead
        cut_reencode(uri, 0.0, float("inf"), path)
    return path


class _Shard:
    def __init__(self, dest: Destination, number: int) -> None:
        self.dest, self.number, self.rows = dest, number, []
        self.name = f"{number:05d}"
        self._context = dest.writing(f"{self.name}.tar")
        self.tar = tarfile.open(self._context.__enter__(), "w")
        self.started = time.time()

    def add(self, output: str, row: dict[str, Any], uri: str, keyframes: bool) -> None:
        key = sample_key(self.number, len(self.rows))
        with tempfile.TemporaryDirectory(prefix="sg4v-wds-") as tmp_dir:
            _add_file(self.tar, f"{key}.mp4", _as_mp4(uri, tmp_dir))
        _add_bytes(self.tar, f"{key}.txt", row[col.SUMMARY].encode("utf-8"))
        _add_bytes(self.tar, f"{key}.json", json.dumps(sample_json(row, key), ensure_ascii=False).encode())
        if keyframes:
            for i, path in enumerate(row.get(col.KEYFRAME_PATHS) or []):
                _add_file(self.tar, f"{key}.{i:03d}.{path.rsplit('.', 1)[-1]}", join(output, path))
        self.rows.append({"key": key, "status": "success", "error_message": None, "url": row[col.URI],
                          "caption": row[col.SUMMARY], "video_id": row[col.VIDEO_ID],
                          "clip_start": row.get(col.CLIP_START), "clip_end": row.get(col.CLIP_END),
                          "duration": clip_duration(row)})

    def close(self, error: BaseException | None = None) -> None:
        self.tar.close()
        if error is not None:
            self._context.__exit__(type(error), error, error.__traceback__)
            return
        self._context.__exit__(None, None, None)
        table = pa.Table.from_pylist(self.rows, schema=PARQUET_SCHEMA)
        with self.dest.writing(f"{self.name}.parquet") as tmp:
            pq.write_table(table, tmp)
        stats = {"count": len(self.rows), "successes": len(self.rows), "failed_to_download": 0,
                 "failed_to_subsample": 0, "duration": round(time.time() - self.started, 3),
                 "start_time": self.started, "end_time": time.time(),
                 "status_dict": {"success": len(self.rows)}}
        with self.dest.writing(f"{self.name}_stats.json") as tmp, open(tmp, "w") as f:
            json.dump(stats, f, indent=4)


def export(output: str, dest: Destination, options: ExportOptions) -> Tally:
    tally = Tally()
    shard: _Shard | None = None
    shards = 0
    try:
        for row, uri in rows_with_video(output, tally):
            if shard is None or len(shard.rows) >= options.shard_size:
                if shard is not None:
                    shard.close()
                shard, shards = _Shard(dest, shards), shards + 1
            shard.add(output, row, uri, options.keyframes)
            tally.exported += 1
    except BaseException as exc:
        if shard is not None:
            shard.close(exc)
        raise
    if shard is not None:
        shard.close()
    logger.info("exported %d videos in %d shards to %s", tally.exported, shards, dest.uri)
    return tally
