"""Clip files: a kept row that is a span of a longer file gets that span as its own MP4.

Panda-70M metadata with whole-video downloads, Ego4D windows, manifests with ``start``/``end``
and unsplit webdataset shards all give rows whose ``uri`` is the long source plus
``clip_start``/``clip_end``. A caption of a 10 s clip must not be paired with the whole
multi-scene file, so this stage (CPU, on the workers, just before the writer) cuts the span
once, writes it next to the row's keyframes as ``keyframes/<video dir>/clip.mp4`` and records
``clip_path`` and ``clip_file_start``. Rows that are whole files are referenced, not copied.

``writer.clips`` picks how: ``reencode`` (frame-exact, libx264 + AAC), ``copy`` (stream copy
from the keyframe at or before the start; falls back to ``reencode`` when MP4 cannot hold the
source's codec) or ``none`` (the stage is left out; exports that need a file refuse such rows).
A span that cannot be cut is rejected with reason and detail, like any unusable video.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from typing import Any, ClassVar

import numpy as np

from operators.base import Batch, Operator, Resources, cell, is_missing, object_column, reject
from operators.dataset import schema as col
from operators.dataset.writer import WriterConfig
from operators.io import holding, is_local, join, local_path, write_bytes_atomic
from operators.keyframes.operator import safe_video_dir
from operators.video.cut import Cut, cut_copy, cut_reencode
from operators.video.decode import TOLERANCE_S
from operators.video.opening import VideoError

logger = logging.getLogger(__name__)

CLIP_NAME = "clip.mp4"


def clip_file_path(video_id: str) -> str:
    """Where a row's clip file goes, relative to the output root (beside its keyframes)."""
    return f"{col.KEYFRAMES_DIR}/{safe_video_dir(video_id)}/{CLIP_NAME}"


def _seconds(value: Any) -> float | None:
    if value is None or is_missing(value):
        return None
    return float(value)


def is_span(clip_start: Any, clip_end: Any, file_duration: Any) -> bool:
    """True when ``[clip_start, clip_end)`` is less than the whole file."""
    start, end, whole = _seconds(clip_start), _seconds(clip_end), _seconds(file_duration)
    if start is None and end is None:
        return False
    if start is not None and start > TOLERANCE_S:
        return True
    return end is not None and (whole is None or end < whole - 0.05)


class CutClips(Operator):
    """Adds ``clip_path`` (None for whole files) and ``clip_file_start`` per row."""

    name: ClassVar[str] = "clip_files"
    opens_source: ClassVar[bool] = True
    input_columns: ClassVar[tuple[str, ...]] = (col.VIDEO_ID, col.URI, col.CLIP_START, col.CLIP_END,
                                                col.FILE_DURATION, col.ROTATION)
    output_columns: ClassVar[tuple[str, ...]] = (col.CLIP_PATH, col.CLIP_FILE_START)

    def __init__(self, config: WriterConfig | None = None, resources: Resources | None = None,
                 *, output: str) -> None:
        super().__init__(config or WriterConfig(), resources)
        if self.config.clips == "none":
            raise ValueError("CutClips with writer.clips=none: leave the stage out instead")
        self.output = output

    def default_resources(self) -> Resources:
        return Resources(num_cpus=1.0, batch_size=4)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch[col.VIDEO_ID])
        paths: list[str | None] = [None] * n
        starts: list[float | None] = [None] * n
        for i in range(n):
            row = {c: batch[c][i] if c in batch else None for c in self.input_columns}
            if not is_span(row[col.CLIP_START], row[col.CLIP_END], row[col.FILE_DURATION]):
                continue
            try:
                with holding(str(row[col.URI]), cell(batch, col.SOURCE_BYTES, i)):
                    paths[i], starts[i] = self._cut(row)
            except VideoError as exc:
                reject(batch, i, self.name, exc.reason, exc.detail)
            except Exception as exc:  # noqa: BLE001 - FFmpeg's many errors: this row's problem
                reject(batch, i, self.name, "clip_failed", f"{type(exc).__name__}: {exc}")
        batch[col.CLIP_PATH] = object_column(paths)
        batch[col.CLIP_FILE_START] = np.array([np.nan if s is None else s for s in starts])
        return batch

    def _cut(self, row: dict[str, Any]) -> tuple[str, float]:
        video_id, uri = str(row[col.VIDEO_ID]), str(row[col.URI])
        start = _seconds(row[col.CLIP_START]) or 0.0
        end = _seconds(row[col.CLIP_END]) or _seconds(row[col.FILE_DURATION]) or float("inf")
        relative = clip_file_path(video_id)
        dest = join(self.output, relative)
        local = is_local(dest)
        folder = os.path.dirname(local_path(dest)) if local else tempfile.gettempdir()
        os.makedirs(folder, exist_ok=True)
        # Cut under a temporary name, renamed (or uploaded) once whole: a killed task never
        # leaves a half-written clip under the name a row points to.
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}.mp4")
        try:
            cut = self.cut_file(uri, start, end, tmp, _rotation(row[col.ROTATION]))
            if local:
                os.replace(tmp, local_path(dest))
            else:
                with open(tmp, "rb") as f:
                    write_bytes_atomic(dest, f.read())
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        logger.debug("%s: %s clip of %.3f s from %.3f s -> %s", video_id, cut.mode, cut.duration,
                     cut.start, relative)
        return relative, cut.start

    def cut_file(self, uri: str, start: float, end: float, tmp: str, rotation: int) -> Cut:
        c = self.config
        if c.clips == "copy":
            try:
                return cut_copy(uri, start, end, tmp)
            except VideoError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a codec MP4 cannot carry (cinepak)
                logger.info("%s: stream copy impossible (%s); re-encoding the clip", uri, exc)
        return cut_reencode(uri, start, end, tmp, crf=c.clip_crf, preset=c.clip_preset,
                            rotation=rotation)


def _rotation(value: Any) -> int:
    return 0 if value is None or is_missing(value) else int(value)
