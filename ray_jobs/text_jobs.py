"""The text-only commands beside the pipeline: ``sg4v summarize-clip`` and ``sg4v recaption``.

Both run in this process, without Ray: one API client with the run's ``llm`` settings (its
cache, rate limits and budget), a bounded number of calls in flight. Their ``llm`` settings
come from ``--config`` or, for ``summarize-clip``, from the ``config.yaml`` the run left in its
output; ``--set`` overrides either. With ``test_server.enabled`` the calls go to the local test
server, as in a smoke run.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from operators.captions.clip_summary import Span, stored_captions, summarize_span
from operators.captions.recaption import Direction, read_lines, recaption_record
from operators.captions.text_calls import map_bounded, open_client
from operators.dataset.schema import CONFIG_FILE, USAGE_TYPE
from operators.io import filesystem, join, open_binary, write_bytes_atomic
from operators.llm.budget import Usage
from ray_jobs.config import ConfigError, PipelineConfig, load_config
from ray_jobs.services import start_test_server_if_enabled

logger = logging.getLogger(__name__)

CLIP_SUMMARIES_DIR = "clip_summaries"
#: Lines of a ``recaption`` input read and answered at once.
RECAPTION_CHUNK = 256


def run_config(config: str | None, output: str | None, overrides: Sequence[str]) -> PipelineConfig:
    """``--config`` if given, else the run's ``OUTPUT/config.yaml``; ``ConfigError`` if neither."""
    if config:
        return load_config(config, list(overrides))
    if output is None:
        raise ConfigError("--config is required (the llm section says which endpoint to call)")
    path = join(output, CONFIG_FILE)
    try:
        with open_binary(path) as f:
            raw = yaml.safe_load(f.read()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: not a run's output? Pass --config") from None
    return load_config(raw, list(overrides))


def _usage_total(rows: Sequence[dict[str, Any]]) -> Usage:
    total = Usage()
    for row in rows:
        total.merge(Usage(**row["usage"]))
    return total


# --- summarize-clip ----------------------------------------------------------------------------

def summarize_clips(output: str, spans: Sequence[Span], config: PipelineConfig,
                    dest: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """One row per span (its caption or the reason it has none), written as one Parquet file
    under ``dest`` (default ``OUTPUT/clip_summaries``); returns the rows and the file."""
    captions = dict(stored_captions(output, {s.video_id for s in spans}))
    llm, stop = start_test_server_if_enabled(config.llm, config.test_server)
    try:
        rows = asyncio.run(_summarize(llm, output, spans, captions))
    finally:
        stop()
    folder = dest or join(output, CLIP_SUMMARIES_DIR)
    return rows, write_clip_summaries(folder, rows)


async def _summarize(llm: Any, output: str, spans: Sequence[Span], captions: dict) -> list[dict[str, Any]]:
    async with open_client(llm, output) as client:
        return await map_bounded(spans, lambda s: summarize_span(client, llm, s, captions.get(s.video_id)),
                                 llm.concurrency_per_actor)


def write_clip_summaries(folder: str, rows: Sequence[dict[str, Any]]) -> str:
    """``folder/part-<hash of the spans>.parquet``: asking again for the same spans replaces
    the file instead of adding a second copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("video_id", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                        ("num_captions", pa.int64()), ("caption", pa.string()),
                        ("reason", pa.string()), ("usage", USAGE_TYPE)])
    table = pa.Table.from_pylist(list(rows), schema=schema)
    key = hashlib.sha256(json.dumps([[r["video_id"], r["start"], r["end"]] for r in rows]).encode())
    path = join(folder, f"part-{key.hexdigest()[:24]}.parquet")
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    fs, root = filesystem(folder)
    fs.makedirs(root, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def render_clip_summaries(rows: Sequence[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        head = f"{row['video_id']} [{row['start']:.2f}-{row['end']:.2f} s], {row['num_captions']} caption(s)"
        lines.append(f"{head}: {row['caption']}" if row["caption"] else f"{head}: no summary ({row['reason']})")
    total = _usage_total(rows)
    lines.append(f"{len(rows)} span(s); {total.calls} call(s), {total.cached_calls} from the cache, "
                 f"${total.cost_usd:.4f}")
    return "\n".join(lines)


# --- recaption ---------------------------------------------------------------------------------

def recaption_file(source: str, dest: str, direction: Direction, config: PipelineConfig,
                   chunk: int = RECAPTION_CHUNK) -> Usage:
    """``source`` (JSON Lines) re-captioned into ``dest``, line for line, in order; the file
    appears whole or not at all. Returns what it cost."""
    llm, stop = start_test_server_if_enabled(config.llm, config.test_server)
    try:
        return asyncio.run(_recaption(llm, source, dest, direction, chunk))
    finally:
        stop()


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _recaption(llm: Any, source: str, dest: str, direction: Direction, chunk: int) -> Usage:
    total = Usage()
    fs, target = filesystem(dest)
    partial = target + ".partial"
    parent = target.rsplit("/", 1)[0] if "/" in target else "."
    fs.makedirs(parent, exist_ok=True)
    cache_home = llm.cache_dir or join(dest.rsplit("/", 1)[0] if "/" in dest else ".", "llm_cache")
    async with open_client(llm.model_copy(update={"cache_dir": cache_home}), None) as client:
        with open_binary(source) as lines, fs.open(partial, "wb") as out:
            for part in _chunks(read_lines(iter(lines)), chunk):
                rows = await map_bounded(
                    part, lambda item: recaption_record(client, llm, item[1], item[2], direction),
                    llm.concurrency_per_actor)
                for row in rows:
                    total.merge(Usage(**row["usage"]))
                    out.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
    fs.mv(partial, target)
    return total
