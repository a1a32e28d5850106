"""The on-disk format of a run's output: folder and file names, column names, Arrow schemas.

Everything that reads or writes an output (the writer, resume, exports, the report, the dedup
rebuild) takes its names from here; a column name spelled out as a string in two modules is a
drift waiting to happen.

    OUTPUT/
      dataset/*.parquet     one row per kept video (DATASET_SCHEMA)
      rejected/*.parquet    one row per dropped video (REJECTED_SCHEMA)
      keyframes/            keyframe images (archives, see archive.py), referenced by KEYFRAME_PATHS
      llm_cache/            content-addressed API responses
      listing/FINGERPRINT/  the sources' rows as Parquet shards (LISTING_SCHEMA), reused by reruns
      pending/              while a run goes on: the rows it still has to process, one file per
                            resume bucket (removed when the run ends)
      stats.json            counts, timings, tokens, cost of the last run
      config.yaml           the resolved config, without secrets
"""

from __future__ import annotations

import pyarrow as pa

# Folders and files.
DATASET_DIR = "dataset"
REJECTED_DIR = "rejected"
KEYFRAMES_DIR = "keyframes"
#: Exports write here unless told otherwise (``OUTPUT/exports/<format>``).
EXPORTS_DIR = "exports"
LLM_CACHE_DIR = "llm_cache"
LISTING_DIR = "listing"
#: The rows a run still has to process (its windows read them); rewritten by every run.
PENDING_DIR = "pending"
#: Written last into a listing's folder: the listing is complete (row counts per source).
LISTING_DONE_FILE = "_listing.json"
STATS_FILE = "stats.json"
CONFIG_FILE = "config.yaml"
#: Folders whose files describe each video's fate (a rerun reads them).
RESULT_DIRS = (DATASET_DIR, REJECTED_DIR)
#: Prefix of the names files are written under before the rename that makes them visible.
TEMP_PREFIX = ".tmp-"

# Columns several modules read by name.
VIDEO_ID = "video_id"
SOURCE = "source"
URI = "uri"
#: A shard member's bytes, read once by the probe and handed on to the stages that open the
#: video again (never written: released after the last of them, and with a rejection).
SOURCE_BYTES = "source_bytes"
CLIP_START = "clip_start"
CLIP_END = "clip_end"
DURATION = "duration"
FILE_DURATION = "file_duration"
WIDTH = "width"
HEIGHT = "height"
ROTATION = "rotation"
SHORT_CAPTION = "short_caption"
TEXT_EMBEDDING = "text_embedding"
DEDUP_RANK = "dedup_rank"
KEYFRAME_TIMESTAMPS = "keyframe_timestamps"
KEYFRAME_PATHS = "keyframe_paths"
CAPTIONS = "captions"
SUMMARY = "summary"
USAGE = "usage"
#: The row's own clip file (relative to the output root), for rows that are spans of a longer
#: file; None for rows that are whole files (exports reference ``uri`` instead).
CLIP_PATH = "clip_path"
#: Where the clip file starts, in seconds on the source's clock: ``clip_start`` for a
#: re-encoded clip, the keyframe at or before it for a stream copy.
CLIP_FILE_START = "clip_file_start"
#: Fields of one entry of ``captions``.
CAPTION_IDX = "idx"
CAPTION_TIMESTAMP = "timestamp"
CAPTION_KIND = "kind"
CAPTION_TEXT = "text"
#: Why the model stopped on that caption (``stop``, ``length``...), as the API reported it.
CAPTION_FINISH_REASON = "finish_reason"
#: Keyframes left out of the caption chain (``llm.on_frame_error: skip_frame``).
SKIPPED_KEYFRAMES = "skipped_keyframes"
STAGE = "stage"
REASON = "reason"
DETAIL = "detail"

USAGE_TYPE = pa.struct([
    ("calls", pa.int64()), ("cached_calls", pa.int64()), ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()), ("cost_usd", pa.float64()),
])
CAPTION_TYPE = pa.struct([
    (CAPTION_IDX, pa.int64()), (CAPTION_TIMESTAMP, pa.float64()), (CAPTION_KIND, pa.string()),
    (CAPTION_TEXT, pa.string()), (CAPTION_FINISH_REASON, pa.string()),
])
SKIPPED_KEYFRAME_TYPE = pa.struct([
    (CAPTION_IDX, pa.int64()), (CAPTION_TIMESTAMP, pa.float64()), (REASON, pa.string()),
])

#: Columns of ``dataset/*.parquet``, in order. Columns a run has no stage for are left out.
DATASET_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()), (SOURCE, pa.string()), (URI, pa.string()),
    (CLIP_START, pa.float64()), (CLIP_END, pa.float64()), (DURATION, pa.float64()),
    (FILE_DURATION, pa.float64()), ("fps", pa.float64()), ("fps_num", pa.int64()),
    ("fps_den", pa.int64()), (WIDTH, pa.int64()), (HEIGHT, pa.int64()),
    (ROTATION, pa.int64()), ("codec", pa.string()), ("num_frames", pa.int64()),
    ("size_bytes", pa.int64()), ("source_caption", pa.string()),
    ("frame_timestamps", pa.list_(pa.float64())),
    (SHORT_CAPTION, pa.string()), (TEXT_EMBEDDING, pa.list_(pa.float32())),
    (DEDUP_RANK, pa.int64()),
    ("keyframe_indices", pa.list_(pa.int64())), (KEYFRAME_TIMESTAMPS, pa.list_(pa.float64())),
    (KEYFRAME_PATHS, pa.list_(pa.string())),
    (CAPTIONS, pa.list_(CAPTION_TYPE)), (SUMMARY, pa.string()), (USAGE, USAGE_TYPE),
    (CLIP_PATH, pa.string()), (CLIP_FILE_START, pa.float64()),
    (SKIPPED_KEYFRAMES, pa.list_(SKIPPED_KEYFRAME_TYPE)),
])

#: Columns of ``rejected/*.parquet``.
REJECTED_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()), (SOURCE, pa.string()), (URI, pa.string()),
    (CLIP_START, pa.float64()), (CLIP_END, pa.float64()),
    (STAGE, pa.string()), (REASON, pa.string()), (DETAIL, pa.string()),
    (DEDUP_RANK, pa.int64()), (USAGE, USAGE_TYPE),
])

#: Columns of ``listing/*/part-*.parquet``: a source row and its place in the listing (which
#: decides, of two rows with one id, the one that keeps it).
LISTING_PART = "listing_part"
LISTING_ROW = "listing_row"
LISTING_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()), (SOURCE, pa.string()), (URI, pa.string()),
    (CLIP_START, pa.float64()), (CLIP_END, pa.float64()), ("source_caption", pa.string()),
    ("reject_stage", pa.string()), ("reject_reason", pa.string()), ("reject_detail", pa.string()),
    (LISTING_PART, pa.int64()), (LISTING_ROW, pa.int64()),
])

#: In the pipeline a rejection travels in the row's ``reject_*`` columns; on disk they are named so.
REJECT_COLUMN_ON_DISK = {"reject_stage": STAGE, "reject_reason": REASON, "reject_detail": DETAIL}

#: What the exports read from ``dataset/``; a file written before a stage existed lacks some.
EXPORT_COLUMNS = (VIDEO_ID, SOURCE, URI, CLIP_START, CLIP_END, DURATION, FILE_DURATION,
                  SHORT_CAPTION, KEYFRAME_TIMESTAMPS, KEYFRAME_PATHS, CAPTIONS, SUMMARY, USAGE,
                  CLIP_PATH, CLIP_FILE_START)
