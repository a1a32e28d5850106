"""``sharegpt4video``: the ShareGPT4Video release's JSONL and its zip archives of videos.

    DIR/sharegpt4video.jsonl
    DIR/zip_folder/<source>/<source>_videos_1.zip, <source>_videos_2.zip, ...

One line per video, with the release's fields: ``video_id``, ``video_path`` (the member inside
the archive), ``zip_folder`` (the archive's file name, as the release writes it: readers do
``Path(sample["zip_folder"]).stem``), ``timestamp`` (keyframe times, seconds from the clip's
start) and ``captions`` = ``[{"idx": "0", "content": ...}, ..., {"idx": "-1", "content":
summary}]`` with string indices. Besides: ``clip_start``/``clip_end`` on the source and, with
``--keyframes``, ``keyframe_paths`` relative to DIR. Archives are STORED (videos do not
compress) and capped at ``archive_size`` bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import zipfile
from typing import Any

from operators.dataset import schema as col
from operators.dataset.exports.dest import Destination
from operators.dataset.exports.media import extension, file_stem
from operators.dataset.exports.options import ExportOptions
from operators.dataset.exports.rows import Tally, rows_with_video, sorted_captions
from operators.io import file_size, join, open_binary

logger = logging.getLogger(__name__)

RECORDS = "sharegpt4video.jsonl"
ARCHIVE_DIR = "zip_folder"


def release_record(row: dict[str, Any], video_path: str, zip_folder: str,
                   keyframe_paths: list[str] | None = None) -> dict[str, Any]:
    """One line of the JSONL."""
    captions = [{"idx": str(c[col.CAPTION_IDX]), "content": c[col.CAPTION_TEXT] or ""}
                for c in sorted_captions(row)]
    record = {
        "video_id": row[col.VIDEO_ID],
        "video_path": video_path,
        "zip_folder": zip_folder,
        "timestamp": list(row.get(col.KEYFRAME_TIMESTAMPS) or []),
        "captions": [*captions, {"idx": "-1", "content": row[col.SUMMARY]}],
        "clip_start": row.get(col.CLIP_START),
        "clip_end": row.get(col.CLIP_END),
    }
    if keyframe_paths is not None:
        record["keyframe_paths"] = keyframe_paths
    return record


class _Archives:
    """The open archive of each source; a new one when the next video would pass the cap."""

    def __init__(self, dest: Destination, cap: int) -> None:
        self.dest, self.cap = dest, cap
        self.open: dict[str, tuple[contextlib.ExitStack, zipfile.ZipFile, str]] = {}
        self.sizes: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def add(self, source: str, uri: str, member: str) -> str:
        """Store ``uri`` as ``member`` in the current archive of ``source``; its file name."""
        size = file_size(uri) or 0
        if source in self.open and self.sizes[source] and self.sizes[source] + size > self.cap:
            self._close(source)
        if source not in self.open:
            self.counts[source] = self.counts.get(source, 0) + 1
            name = f"{source}_videos_{self.counts[source]}.zip"
            stack = contextlib.ExitStack()
            tmp = stack.enter_context(self.dest.writing(f"{ARCHIVE_DIR}/{source}/{name}"))
            archive = stack.enter_context(zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True))
            self.open[source], self.sizes[source] = (stack, archive, name), 0
        _, archive, name = self.open[source]
        with open_binary(uri) as src, archive.open(member, "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        self.sizes[source] += size
        return name

    def _close(self, source: str) -> None:
        stack, _, _ = self.open.pop(source)
        stack.close()  # closes the zip, then renames (or uploads) it into place

    def abort(self, exc: BaseException) -> None:
        """Drop the open archives' temporary files: a failed export leaves no partial zip."""
        for stack, _, _ in self.open.values():
            with contextlib.suppress(BaseException):
                stack.__exit__(type(exc), exc, exc.__traceback__)
        self.open.clear()

    def close(self) -> int:
        for source in list(self.open):
            self._close(source)
        return sum(self.counts.values())


def export(output: str, dest: Destination, options: ExportOptions) -> Tally:
    tally = Tally()
    archives = _Archives(dest, options.archive_size)
    with dest.writing(RECORDS) as tmp, open(tmp, "w", encoding="utf-8") as lines:
        try:
            _write(output, dest, options, tally, archives, lines)
        except BaseException as exc:
            archives.abort(exc)
            raise
        # The archives are complete before the JSONL that points into them appears.
        count = archives.close()
    logger.info("exported %d videos in %d archives to %s", tally.exported, count, dest.uri)
    return tally


def _write(output: str, dest: Destination, options: ExportOptions, tally: Tally,
           archives: _Archives, lines: Any) -> None:
    for row, uri in rows_with_video(output, tally):
        source = file_stem(str(row.get(col.SOURCE) or "videos"))
        member = file_stem(str(row[col.VIDEO_ID])) + extension(uri)
        zip_name = archives.add(source, uri, member)
        keyframes = None
        if options.keyframes:
            keyframes = list(row.get(col.KEYFRAME_PATHS) or [])
            for path in keyframes:
                dest.add_file(join(output, path), path)
        lines.write(json.dumps(release_record(row, member, zip_name, keyframes),
                               ensure_ascii=False) + "\n")
        tally.exported += 1
