"""``sg4v report OUT``: a static HTML viewer of an output folder.

``{dest_dir}/index.html`` with ``report.css`` and ``report.js`` (from ``report_assets/``), and the
data as small scripts under ``{dest_dir}/data/``: ``summary.js`` (dataset-level numbers and which
video is on which page) and ``page-0000.js``, ... (``page_size`` videos each), loaded only when
their page is shown. Scripts rather than JSON because browsers refuse ``fetch`` on ``file://``;
a ``<script src>`` works from disk and from any static web server alike. Keyframes are shown
from the output's own ``keyframes/`` folder by relative path, so nothing is copied.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from operators.base import is_missing
from operators.dataset import schema as S
from operators.dataset.reader import read_column_values
from operators.io import filesystem, is_local, join, local_path, write_bytes_atomic

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
#: Duplicates listed by name; the counts always cover all of them.
MAX_DUPLICATES = 2000
ASSETS = Path(__file__).with_name("report_assets")
VIDEO_COLUMNS = [S.VIDEO_ID, S.SOURCE, S.URI, S.CLIP_START, S.CLIP_END, S.DURATION, S.SHORT_CAPTION,
                 S.KEYFRAME_TIMESTAMPS, S.KEYFRAME_PATHS, S.CAPTIONS, S.SUMMARY, S.USAGE]
REJECTED_COLUMNS = [S.VIDEO_ID, S.URI, S.STAGE, S.REASON, S.DETAIL]
USAGE_FIELDS = ("calls", "cached_calls", "input_tokens", "output_tokens", "cost_usd")


def video_entry(row: dict[str, Any]) -> dict[str, Any]:
    """What a page shows of one kept video; caption fields are null until the API stage ran."""
    captions = {c["idx"]: c for c in row.get("captions") or []}
    times = row.get("keyframe_timestamps") or []
    paths = row.get("keyframe_paths") or []
    keyframes = [{"t": t, "src": paths[i] if i < len(paths) else None,
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


def dataset_summary(rows: list[dict[str, Any]], rejected: list[dict[str, Any]],
                    stats: dict[str, Any]) -> dict[str, Any]:
    """Dataset-level numbers, from the files themselves (they cover every run on this output;
    ``stats.json`` only the latest, which is shown apart)."""
    reasons = Counter((r.get("stage"), r.get("reason")) for r in rejected)
    duplicates = [duplicate_entry(r) for r in rejected if r.get("reason") == "duplicate"]
    hist = Counter(len(r.get("keyframe_timestamps") or []) for r in rows)
    usage = {k: 0 for k in USAGE_FIELDS}
    for row in rows:
        for k in USAGE_FIELDS:
            usage[k] += (row.get("usage") or {}).get(k) or 0
    return {
        "kept": len(rows),
        "captioned": sum(not is_missing(r.get("summary")) for r in rows),
        "rejected": len(rejected),
        "byReason": [[s, r, c] for (s, r), c in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))],
        "duplicates": duplicates[:MAX_DUPLICATES],
        "duplicatesTotal": len(duplicates),
        "keyframesHist": sorted(hist.items()),
        "keyframesTotal": sum(k * c for k, c in hist.items()),
        "usage": usage,
        "lastRun": {k: stats[k] for k in ("inputs", "kept", "rejected", "wall_seconds") if k in stats},
    }


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


def write_report(output: str, dest: str | None = None, page_size: int = PAGE_SIZE) -> str:
    """Write the report (default ``{output}/report/index.html``); the path of its index.html."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    dest = dest or join(output, "report", "index.html")
    dest_dir = dest.rsplit("/", 1)[0] if "/" in dest else "."
    rows = sorted(read_column_values(output, S.DATASET_DIR, VIDEO_COLUMNS), key=lambda r: r["video_id"])
    rejected = read_column_values(output, S.REJECTED_DIR, REJECTED_COLUMNS)
    pages = [rows[i:i + page_size] for i in range(0, len(rows), page_size)]
    for n, page in enumerate(pages):
        write_bytes_atomic(join(dest_dir, "data", f"page-{n:04d}.js"),
                           _script(f"SG4V_PAGES[{n}]", [video_entry(r) for r in page]))
    summary = dataset_summary(rows, rejected, _read_stats(output))
    summary.update(output=output, root=relative_root(output, dest_dir), pageSize=page_size,
                   pages=[[r["video_id"] for r in page] for page in pages],
                   generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    write_bytes_atomic(join(dest_dir, "data", "summary.js"), _script("var SG4V", summary))
    for name in ("report.css", "report.js"):
        write_bytes_atomic(join(dest_dir, name), (ASSETS / name).read_bytes())
    write_bytes_atomic(dest, (ASSETS / "index.html").read_bytes())
    logger.info("report of %d kept and %d rejected videos in %d pages: %s",
                len(rows), len(rejected), len(pages), dest)
    return dest
