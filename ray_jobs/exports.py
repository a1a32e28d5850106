"""Exports of an output folder for the tools that train on it.

- ``sharegpt4video``: ``sharegpt4video.jsonl``, the ShareGPT4Video release format. One line per
  video: ``video_id``, ``video_path``, ``timestamp`` (keyframe times, seconds from the clip start),
  ``captions`` = ``[{"idx": "0", "content": ...}, ..., {"idx": "-1", "content": summary}]`` with
  string indices as in the official release, plus ``keyframe_paths``, ``clip_start``, ``clip_end``.
- ``llava``: one JSON list of LLaVA/ShareGPT conversations (``id``, ``video``, ``conversations``):
  a prompt and the summary as answer, optionally one more turn per keyframe caption.
- ``webdataset``: tar shards ``shard-000000.tar`` of samples ``KEY.json`` + ``KEY.000.jpg``, ...

Only videos with a summary are exported: a video the API stage has not captioned yet (or could
not) has nothing to train on. How many were left out is logged. Everything is read and written
through fsspec, so the output and the destination may be local or on object storage.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
from typing import Any

from operators.base import is_missing
from operators.dataset.reader import read_column_values
from operators.io import filesystem, is_local, join, local_path, open_binary, write_bytes_atomic

logger = logging.getLogger(__name__)

FORMATS = ("sharegpt4video", "llava", "webdataset")
COLUMNS = ["video_id", "uri", "clip_start", "clip_end", "duration", "short_caption",
           "keyframe_timestamps", "keyframe_paths", "captions", "summary", "usage"]
LLAVA_PROMPT = "Describe this video in detail."


def captioned_rows(output: str) -> list[dict[str, Any]]:
    """Kept videos that have a summary, ordered by ``video_id`` so exports are reproducible."""
    rows = sorted(read_column_values(output, "dataset", COLUMNS), key=lambda r: r["video_id"])
    kept = [r for r in rows if not is_missing(r.get("summary"))]
    if len(kept) < len(rows):
        logger.warning("%d of %d kept videos have no summary yet and are not exported",
                       len(rows) - len(kept), len(rows))
    return kept


def _captions(row: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(row.get("captions") or [], key=lambda c: c["idx"])


def release_record(row: dict[str, Any]) -> dict[str, Any]:
    """One line of ``sharegpt4video.jsonl``."""
    captions = [{"idx": str(c["idx"]), "content": c["text"] or ""} for c in _captions(row)]
    return {
        "video_id": row["video_id"],
        "video_path": row["uri"],
        "timestamp": list(row.get("keyframe_timestamps") or []),
        "keyframe_paths": list(row.get("keyframe_paths") or []),
        "clip_start": row.get("clip_start"),
        "clip_end": row.get("clip_end"),
        "captions": [*captions, {"idx": "-1", "content": row["summary"]}],
    }


def export_sharegpt4video(output: str, dest: str | None = None) -> str:
    """Write ``sharegpt4video.jsonl`` (default ``{output}/sharegpt4video.jsonl``); its path."""
    dest = dest or join(output, "sharegpt4video.jsonl")
    lines = [json.dumps(release_record(r), ensure_ascii=False) + "\n" for r in captioned_rows(output)]
    write_bytes_atomic(dest, "".join(lines).encode("utf-8"))
    logger.info("exported %d videos to %s", len(lines), dest)
    return dest


def _keyframe_question(caption: dict[str, Any], previous: dict[str, Any] | None) -> str:
    if previous is None or caption.get("kind") == "detailed":
        return f"Describe the frame at {caption['timestamp']:.1f} s in detail."
    return f"What changes between {previous['timestamp']:.1f} s and {caption['timestamp']:.1f} s?"


def llava_record(row: dict[str, Any], keyframe_turns: bool = False, prompt: str = LLAVA_PROMPT,
                 video_root: str | None = None) -> dict[str, Any]:
    """One LLaVA conversation: ``<video>`` and the prompt, the summary as answer; with
    ``keyframe_turns`` a question and its caption per keyframe after it."""
    turns = [{"from": "human", "value": f"<video>\n{prompt}"}, {"from": "gpt", "value": row["summary"]}]
    if keyframe_turns:
        previous = None
        for caption in _captions(row):
            turns.append({"from": "human", "value": _keyframe_question(caption, previous)})
            turns.append({"from": "gpt", "value": caption["text"] or ""})
            previous = caption
    video = row["uri"]
    if video_root and video.startswith(video_root.rstrip("/") + "/"):
        video = video[len(video_root.rstrip("/")) + 1:]
    record = {"id": row["video_id"], "video": video, "conversations": turns}
    if row.get("clip_start") is not None:
        record["clip"] = [row["clip_start"], row.get("clip_end")]
    return record


def export_llava(output: str, dest: str | None = None, keyframe_turns: bool = False,
                 prompt: str = LLAVA_PROMPT, video_root: str | None = None) -> str:
    """Write the LLaVA conversation JSON (default ``{output}/llava.json``); its path.
    ``video_root``: a prefix stripped from video paths, for trainers that take a video folder."""
    dest = dest or join(output, "llava.json")
    records = [llava_record(r, keyframe_turns, prompt, video_root) for r in captioned_rows(output)]
    write_bytes_atomic(dest, json.dumps(records, ensure_ascii=False, indent=1).encode("utf-8"))
    logger.info("exported %d conversations to %s", len(records), dest)
    return dest


def sample_key(video_id: str) -> str:
    """A webdataset key: no dots or slashes (they split keys from extensions); unique."""
    key = re.sub(r"[^A-Za-z0-9_-]", "_", video_id)
    return key if key == video_id else f"{key}_{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"


def webdataset_sample(row: dict[str, Any]) -> dict[str, Any]:
    by_idx = {c["idx"]: c for c in row.get("captions") or []}
    keyframes = [{"idx": i, "timestamp": t, "image": f"{i:03d}.jpg",
                  "kind": by_idx.get(i, {}).get("kind"), "caption": by_idx.get(i, {}).get("text")}
                 for i, t in enumerate(row.get("keyframe_timestamps") or [])]
    return {"video_id": row["video_id"], "video_path": row["uri"], "clip_start": row.get("clip_start"),
            "clip_end": row.get("clip_end"), "duration": row.get("duration"),
            "short_caption": row.get("short_caption"), "summary": row["summary"],
            "keyframes": keyframes, "usage": row.get("usage")}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_shard(output: str, rows: list[dict[str, Any]], dest: str) -> None:
    local_dir = os.path.dirname(local_path(dest)) if is_local(dest) else None
    if local_dir:
        os.makedirs(local_dir, exist_ok=True)
    # Built in a temporary file beside the shard, then renamed (or uploaded in one PUT).
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tar", dir=local_dir)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
            for row in rows:
                key = sample_key(row["video_id"])
                sample = webdataset_sample(row)
                _add(tar, f"{key}.json", json.dumps(sample, ensure_ascii=False).encode("utf-8"))
                for i, path in enumerate(row.get("keyframe_paths") or []):
                    with open_binary(join(output, path)) as image:  # a file or a packed member
                        _add(tar, f"{key}.{i:03d}.jpg", image.read())
        if local_dir:
            os.replace(tmp, local_path(dest))
        else:
            dest_fs, dest_path = filesystem(dest)
            dest_fs.put_file(tmp, dest_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_webdataset(output: str, dest_dir: str | None = None, shard_size: int = 1000) -> list[str]:
    """Write webdataset shards of ``shard_size`` videos (default ``{output}/webdataset/``);
    their paths. Shards a previous export left beyond the new last one are removed."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    dest_dir = dest_dir or join(output, "webdataset")
    rows = captioned_rows(output)
    written = []
    for n, start in enumerate(range(0, len(rows), shard_size)):
        written.append(join(dest_dir, f"shard-{n:06d}.tar"))
        _write_shard(output, rows[start:start + shard_size], written[-1])
    fs, root = filesystem(dest_dir)
    keep = {filesystem(p)[1] for p in written}
    for stale in fs.glob(f"{root.rstrip('/')}/shard-*.tar") if fs.exists(root) else []:
        if stale not in keep:
            fs.rm(stale)
    logger.info("exported %d videos in %d shards to %s", len(rows), len(written), dest_dir)
    return written


def export(output: str, fmt: str, dest: str | None = None, **opts: Any) -> list[str]:
    """Export ``output`` in format ``fmt`` (one of :data:`FORMATS`); the paths written.
    ``opts``: ``keyframe_turns``, ``prompt``, ``video_root`` (llava), ``shard_size`` (webdataset)."""
    if fmt == "sharegpt4video":
        return [export_sharegpt4video(output, dest, **opts)]
    if fmt == "llava":
        return [export_llava(output, dest, **opts)]
    if fmt == "webdataset":
        return export_webdataset(output, dest, **opts)
    raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
