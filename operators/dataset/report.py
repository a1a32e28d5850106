"""``sg4v report OUT``: a static HTML viewer of an output folder, written as the output is read.

``{dest_dir}/index.html`` with ``report.css`` and ``report.js`` (from ``report_assets/``), and the
data as small scripts under ``{dest_dir}/data/``: ``page-0000.js``, ... (``page_size`` videos
each, in file order), ``ids-0000.js``, ... (which video is on which page, ``IDS_PAGES`` pages per
script, for the search box and links) and ``summary.js`` (dataset-level numbers), each loaded only
when needed. Scripts rather than JSON because browsers refuse ``fetch`` on ``file://``; a
``<script src>`` works from disk and from any static web server alike.

The output is read file by file and each page is written as soon as it is full, so memory holds
one Parquet file and one page whatever the size of the output; the summary is counted on the way.

Keyframes that are plain files are shown from the output's own ``keyframes/`` folder by relative
path, so nothing is copied. A keyframe packed into an archive (a byte-range URI, see
``operators.dataset.archive``) cannot be shown by a browser from ``file://``, so the report reads
it with ``open_binary`` and puts a thumbnail (``thumbnail_px`` longest side) in the page script.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from operators.base import is_missing
from operators.dataset import schema as S
from operators.dataset.reader import iter_tables
from operators.io import (
    filesystem,
    is_local,
    join,
    local_path,
    open_binary,
    parse_range_uri,
    write_bytes_atomic,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
#: Pages whose video ids share one ``ids-NNNN.js`` (5,000 ids at the default page size).
IDS_PAGES = 100
THUMBNAIL_PX = 320
#: Duplicates listed by name; the counts always cover all of them.
MAX_DUPLICATES = 2000
ASSETS = Path(__file__).with_name("report_assets")
VIDEO_COLUMNS = [S.VIDEO_ID, S.SOURCE, S.URI, S.CLIP_START, S.CLIP_END, S.DURATION, S.SHORT_CAPTION,
                 S.KEYFRAME_TIMESTAMPS, S.KEYFRAME_PATHS, S.CAPTIONS, S.SUMMARY, S.USAGE]
REJECTED_COLUMNS = [S.VIDEO_ID, S.URI, S.STAGE, S.REASON, S.DETAIL]
USAGE_FIELDS = ("calls", "cached_calls", "input_tokens", "output_tokens", "cost_usd")


def video_entry(row: dict[str, Any], image: Any = None) -> dict[str, Any]:
    """What a page shows of one kept video; caption fields are null until the API stage ran.
    ``image(path)`` gives a keyframe's ``src`` (default: the path itself)."""
    captions = {c["idx"]: c for c in row.get("captions") or []}
    times = row.get("keyframe_timestamps") or []
    paths = row.get("keyframe_paths") or []
    image = image or (lambda path: path)
    keyframes = [{"t": t, "src": image(paths[i]) if i < len(paths) else None,
                  "kind": captions.get(i, {}).get("kind"), "text": captions.get(i, {}).get("text")}
                 for i, t in enumerate(times)]
    clip = [row["clip_start"], row.get("clip_end")] if row.get("clip_start") is not None else None
    return {"id": row["video_id"], "source": row.get("source"), "uri": row.get("uri"), "clip": clip,
            "duration": row.get("duration"), "short": row.get("short_caption"),
            "summary": None if is_missing(row.get("summary")) else row["summary"],
            "usage": row.get("usage"), "keyframes": keyframes}


def duplicate_entry(row: dict[str, Any]) -> dict[str, Any]:
    try:
        detail = json.loads(row.get("detail") or "{}")
    except ValueError:
        detail = {}
    detail = detail if isinstance(detail, dict) else {}
    return {"id": row["video_id"], "uri": row.get("uri"), "nearest": detail.get("nearest_id"),
            "similarity": detail.get("similarity")}


class SummaryCounts:
    """Dataset-level numbers counted row by row: memory is bounded by the number of distinct
    reasons and keyframe counts, plus the first ``MAX_DUPLICATES`` duplicates listed by name."""

    def __init__(self) -> None:
        self.kept = self.captioned = self.rejected = self.duplicates_total = 0
        self.reasons: Counter = Counter()
        self.duplicates: list[dict[str, Any]] = []
        self.hist: Counter = Counter()
        self.usage = {k: 0 for k in USAGE_FIELDS}

    def add_kept(self, row: dict[str, Any]) -> None:
        self.kept += 1
        self.captioned += not is_missing(row.get("summary"))
        self.hist[len(row.get("keyframe_timestamps") or [])] += 1
        for k in USAGE_FIELDS:
            self.usage[k] += (row.get("usage") or {}).get(k) or 0

    def add_rejected(self, row: dict[str, Any]) -> None:
        self.rejected += 1
        self.reasons[(row.get("stage"), row.get("reason"))] += 1
        if row.get("reason") == "duplicate":
            self.duplicates_total += 1
            if len(self.duplicates) < MAX_DUPLICATES:
                self.duplicates.append(duplicate_entry(row))

    def to_json(self, stats: dict[str, Any]) -> dict[str, Any]:
        """The numbers as ``summary.js`` holds them (``stats.json``'s last run shown apart)."""
        return {
            "kept": self.kept,
            "captioned": self.captioned,
            "rejected": self.rejected,
            "byReason": [[s, r, c] for (s, r), c in sorted(self.reasons.items(), key=lambda x: (-x[1], x[0]))],
            "duplicates": self.duplicates,
            "duplicatesTotal": self.duplicates_total,
            "keyframesHist": sorted(self.hist.items()),
            "keyframesTotal": sum(k * c for k, c in self.hist.items()),
            "usage": self.usage,
            "lastRun": {k: stats[k] for k in ("inputs", "kept", "rejected", "wall_seconds") if k in stats},
        }


def dataset_summary(rows: list[dict[str, Any]], rejected: list[dict[str, Any]],
                    stats: dict[str, Any]) -> dict[str, Any]:
    """Dataset-level numbers of these rows (the report counts them as it streams)."""
    counts = SummaryCounts()
    for row in rows:
        counts.add_kept(row)
    for row in rejected:
        counts.add_rejected(row)
    return counts.to_json(stats)


def iter_rows(output: str, folder: str, columns: list[str]) -> Iterator[dict[str, Any]]:
    """Rows of ``output/folder``, file by file: one file's rows in memory at a time."""
    for table in iter_tables(output, folder, columns):
        yield from table.to_pylist()


def thumbnail_src(output: str, path: str, longest_px: int = THUMBNAIL_PX) -> str:
    """A ``src`` the browser can show for a keyframe path: the path for a plain file, a data
    URI of a thumbnail for an archive member (or an empty string when it cannot be read)."""
    if parse_range_uri(path) is None:
        return path
    from PIL import Image

    try:
        with open_binary(join(output, path)) as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > longest_px:
                image.draft("RGB", (longest_px, longest_px))  # DCT scaling: decodes a fraction
                image = image.convert("RGB")
                image.thumbnail((longest_px, longest_px))
                out = io.BytesIO()
                image.save(out, format="JPEG", quality=80)
                data = out.getvalue()
    except OSError as exc:
        logger.warning("report: keyframe %s cannot be read: %s", path, exc)
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _read_stats(output: str) -> dict[str, Any]:
    fs, path = filesystem(join(output, S.STATS_FILE))
    if not fs.exists(path):
        return {}
    try:
        return json.loads(fs.cat_file(path))
    except ValueError:
        logger.warning("ignoring unreadable %s", join(output, S.STATS_FILE))
        return {}


def relative_root(output: str, dest_dir: str) -> str:
    """How the report reaches ``output`` (for its keyframes) from ``dest_dir``."""
    if is_local(output) and is_local(dest_dir):
        rel = os.path.relpath(os.path.abspath(local_path(output)), os.path.abspath(local_path(dest_dir)))
        return rel.replace(os.sep, "/")
    root = output.rstrip("/")
    if dest_dir.startswith(root + "/"):
        return "/".join([".."] * (dest_dir[len(root) + 1:].strip("/").count("/") + 1))
    return root


def _script(assignment: str, value: Any) -> bytes:
    return f"{assignment} = {json.dumps(value, ensure_ascii=False, separators=(',', ':'))};\n".encode()


def write_report(output: str, dest: str | None = None, page_size: int = PAGE_SIZE,
                 thumbnail_px: int = THUMBNAIL_PX) -> str:
    """Write the report (default ``{output}/report/index.html``); the path of its index.html."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    dest = dest or join(output, "report", "index.html")
    dest_dir = dest.rsplit("/", 1)[0] if "/" in dest else "."
    counts = SummaryCounts()
    pages = _PageWriter(dest_dir, page_size)

    def image(path: str) -> str:
        return thumbnail_src(output, path, thumbnail_px)

    for row in iter_rows(output, S.DATASET_DIR, VIDEO_COLUMNS):
        counts.add_kept(row)
        pages.add(video_entry(row, image))
    pages.close()
    for row in iter_rows(output, S.REJECTED_DIR, REJECTED_COLUMNS):
        counts.add_rejected(row)
    summary = counts.to_json(_read_stats(output))
    summary.update(output=output, root=relative_root(output, dest_dir), pageSize=page_size,
                   pageCount=pages.count, idsPages=IDS_PAGES,
                   generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    write_bytes_atomic(join(dest_dir, "data", "summary.js"), _script("var SG4V", summary))
    for name in ("report.css", "report.js"):
        write_bytes_atomic(join(dest_dir, name), (ASSETS / name).read_bytes())
    write_bytes_atomic(dest, (ASSETS / "index.html").read_bytes())
    logger.info("report of %d kept and %d rejected videos in %d pages: %s",
                counts.kept, counts.rejected, pages.count, dest)
    return dest


class _PageWriter:
    """Writes ``page-NNNN.js`` as each page fills and ``ids-NNNN.js`` every ``IDS_PAGES`` pages."""

    def __init__(self, dest_dir: str, page_size: int) -> None:
        self.dest_dir, self.page_size = dest_dir, page_size
        self.page: list[dict[str, Any]] = []
        self.ids: list[list[str]] = []
        self.count = 0

    def add(self, entry: dict[str, Any]) -> None:
        self.page.append(entry)
        if len(self.page) == self.page_size:
            self._flush_page()

    def close(self) -> None:
        if self.page:
            self._flush_page()
        if self.ids:
            self._flush_ids()

    def _flush_page(self) -> None:
        write_bytes_atomic(join(self.dest_dir, "data", f"page-{self.count:04d}.js"),
                           _script(f"SG4V_PAGES[{self.count}]", self.page))
        self.ids.append([v["id"] for v in self.page])
        self.page = []
        self.count += 1
        if len(self.ids) == IDS_PAGES:
            self._flush_ids()

    def _flush_ids(self) -> None:
        group = (self.count - 1) // IDS_PAGES
        write_bytes_atomic(join(self.dest_dir, "data", f"ids-{group:04d}.js"),
                           _script(f"SG4V_IDS[{group}]", self.ids))
        self.ids = []
