"""``hf``: a Hugging Face dataset folder, read by ``datasets.load_dataset(DIR)`` as it is.

    DIR/README.md                       dataset card: YAML header (configs, features), the run
    DIR/data/train-00000.parquet ...    one row per video, captions included
    DIR/videos/<video>.mp4              the clips; ``video_path`` is relative to DIR

The card's ``configs`` entry points ``load_dataset`` at the Parquet files (without it, the
``videos/`` folder would make it guess a video-folder dataset); ``dataset_info.features`` lists
the columns as the Parquet files hold them. ``push_to_hub`` / ``huggingface-cli upload`` can
take the folder as it is.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from operators.dataset import schema as col
from operators.dataset.exports.dest import Destination
from operators.dataset.exports.media import (
    clip_duration,
    clip_file_offset,
    copy_video,
)
from operators.dataset.exports.options import ExportOptions
from operators.dataset.exports.rows import Tally, rows_with_video, sorted_captions
from operators.io import filesystem, join

logger = logging.getLogger(__name__)

DATA_DIR = "data"
#: Rows per Parquet row group and per file: bounded memory, files of a useful size.
ROW_GROUP = 1000
ROWS_PER_FILE = 100_000

CAPTION = pa.struct([("idx", pa.int64()), ("timestamp", pa.float64()), ("kind", pa.string()),
                     ("text", pa.string())])
SCHEMA = pa.schema([
    ("video_id", pa.string()), ("video_path", pa.string()), ("source", pa.string()),
    ("source_uri", pa.string()), ("clip_start", pa.float64()), ("clip_end", pa.float64()),
    ("duration", pa.float64()), ("clip_file_offset", pa.float64()), ("short_caption", pa.string()),
    ("keyframe_timestamps", pa.list_(pa.float64())), ("keyframe_paths", pa.list_(pa.string())),
    ("captions", pa.list_(CAPTION)), ("summary", pa.string()),
])


def hf_row(row: dict[str, Any], video_path: str, keyframe_paths: list[str]) -> dict[str, Any]:
    return {"video_id": row[col.VIDEO_ID], "video_path": video_path, "source": row.get(col.SOURCE),
            "source_uri": row[col.URI], "clip_start": row.get(col.CLIP_START),
            "clip_end": row.get(col.CLIP_END), "duration": clip_duration(row),
            "clip_file_offset": clip_file_offset(row), "short_caption": row.get(col.SHORT_CAPTION),
            "keyframe_timestamps": list(row.get(col.KEYFRAME_TIMESTAMPS) or []),
            "keyframe_paths": keyframe_paths, "captions": sorted_captions(row),
            "summary": row[col.SUMMARY]}


_DTYPES = {pa.string(): "string", pa.float64(): "float64", pa.int64(): "int64"}


def feature(field: pa.Field) -> dict[str, Any]:
    """A column as the card's YAML ``features`` list writes it."""
    kind = field.type
    if pa.types.is_list(kind):
        inner = kind.value_type
        if pa.types.is_struct(inner):
            return {"name": field.name, "list": [feature(inner.field(i)) for i in range(inner.num_fields)]}
        return {"name": field.name, "list": _DTYPES[inner]}
    return {"name": field.name, "dtype": _DTYPES[kind]}


def dataset_card(files: list[str], rows: int, config_text: str, stats: dict[str, Any]) -> str:
    header = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-*.parquet"}]}],
        "dataset_info": {"features": [feature(f) for f in SCHEMA],
                         "splits": [{"name": "train", "num_examples": rows}]},
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "captioning", "sharegpt4video"],
    }
    body = [
        "# Video captions (ShareGPT4Video method)",
        "",
        f"{rows} videos, each with timestamped keyframe captions (a detailed caption of the first "
        "keyframe, a differential caption of each later one) and a summary caption. `video_path` "
        "is the video file relative to this folder; `captions[i].timestamp` and "
        "`keyframe_timestamps` are seconds from the start of the clip (add `clip_file_offset` for "
        "the time in the file).",
        "",
        "```python\nfrom datasets import load_dataset\nds = load_dataset(\"path/to/this/folder\")\n```",
        "",
        f"Data files: {len(files)}. Run statistics:",
        "",
        "```json\n" + json.dumps(stats, indent=2) + "\n```",
        "",
        "## Config of the run",
        "",
        "```yaml\n" + config_text.strip() + "\n```",
        "",
    ]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(body)


def _read_text(output: str, name: str) -> str:
    fs, path = filesystem(join(output, name))
    return fs.cat_file(path).decode("utf-8") if fs.exists(path) else ""


class _Parts:
    """Parquet files of ``ROWS_PER_FILE`` rows, written a row group at a time."""

    def __init__(self, dest: Destination) -> None:
        self.dest, self.files = dest, []
        self.pending: list[dict[str, Any]] = []
        self.in_file = 0
        self.writer = self.context = None

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        if len(self.pending) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            self.files.append(f"{DATA_DIR}/train-{len(self.files):05d}.parquet")
            self.context = self.dest.writing(self.files[-1])
            self.writer = pq.ParquetWriter(self.context.__enter__(), SCHEMA, compression="zstd")
        self.writer.write_table(pa.Table.from_pylist(self.pending, schema=SCHEMA))
        self.in_file += len(self.pending)
        self.pending.clear()
        if self.in_file >= ROWS_PER_FILE:
            self.close()

    def close(self, error: BaseException | None = None) -> None:
        if error is None:
            self._flush()  # the rows left; may itself close a file that became full
        if self.writer is not None:
            self.writer.close()
            exc_info = (type(error), error, error.__traceback__) if error else (None, None, None)
            self.context.__exit__(*exc_info)
        self.writer = self.context = None
        self.in_file = 0


def export(output: str, dest: Destination, options: ExportOptions) -> Tally:
    tally = Tally()
    parts = _Parts(dest)
    try:
        for row, uri in rows_with_video(output, tally):
            video = copy_video(dest, row, uri)
            keyframes = list(row.get(col.KEYFRAME_PATHS) or []) if options.keyframes else []
            for path in keyframes:
                dest.add_file(join(output, path), path)
            parts.add(hf_row(row, video, keyframes))
            tally.exported += 1
    except BaseException as exc:
        parts.close(exc)
        raise
    parts.close()
    stats = json.loads(_read_text(output, col.STATS_FILE) or "{}")
    card = dataset_card(parts.files, tally.exported, _read_text(output, col.CONFIG_FILE), stats)
    with dest.writing("README.md") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(card)
    logger.info("exported %d videos in %d Parquet files to %s", tally.exported, len(parts.files), dest.uri)
    return tally
