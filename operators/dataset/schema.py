"""Names of the output's columns and files, in one place.

Code that reads or writes a column of ``dataset/`` or ``rejected/`` by name imports it from
here, so a renamed column is renamed everywhere at once. Flat constants only.
"""

from __future__ import annotations

import pyarrow as pa

DATASET_DIR = "dataset"
REJECTED_DIR = "rejected"
KEYFRAME_DIR = "keyframes"
STATS_FILE = "stats.json"
CONFIG_FILE = "config.yaml"

VIDEO_ID = "video_id"
SOURCE = "source"
URI = "uri"
CLIP_START = "clip_start"
CLIP_END = "clip_end"
DURATION = "duration"
FILE_DURATION = "file_duration"
WIDTH = "width"
HEIGHT = "height"
ROTATION = "rotation"
SHORT_CAPTION = "short_caption"
KEYFRAME_TIMESTAMPS = "keyframe_timestamps"
KEYFRAME_PATHS = "keyframe_paths"
CAPTIONS = "captions"
SUMMARY = "summary"
USAGE = "usage"
#: The row's own clip file (relative to the output root), for rows that are spans of a longer
#: file; None for rows that are whole files (the export references ``uri`` instead).
CLIP_PATH = "clip_path"
#: Where the clip file starts, in seconds on the source's clock: ``clip_start`` for a
#: re-encoded clip, the keyframe at or before it for a stream copy.
CLIP_FILE_START = "clip_file_start"

#: Fields of one entry of ``captions``.
CAPTION_IDX = "idx"
CAPTION_TIMESTAMP = "timestamp"
CAPTION_KIND = "kind"
CAPTION_TEXT = "text"

REJECT_STAGE = "stage"
REJECT_REASON = "reason"
REJECT_DETAIL = "detail"

CLIP_COLUMNS = pa.schema([(CLIP_PATH, pa.string()), (CLIP_FILE_START, pa.float64())])

#: What the exports read from ``dataset/``; a file written before a stage existed lacks some.
EXPORT_COLUMNS = (VIDEO_ID, SOURCE, URI, CLIP_START, CLIP_END, DURATION, FILE_DURATION,
                  SHORT_CAPTION, KEYFRAME_TIMESTAMPS, KEYFRAME_PATHS, CAPTIONS, SUMMARY, USAGE,
                  CLIP_PATH, CLIP_FILE_START)
