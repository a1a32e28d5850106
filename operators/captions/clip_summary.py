"""Clip summarizing (``sg4v summarize-clip``): a caption of any sub-span of a captioned video.

ShareCaptioner-Video's third mode, on any endpoint: the stored timestamped captions of one
video whose keyframe lies inside ``[start, end]`` (seconds from the clip start, as
``keyframe_timestamps``) are summarized by one text-only call on ``llm.summary_model`` (or
``llm.model``), through the client's cache, limiter and budget, so asking again pays nothing.
Nothing outside the span is sent. The release has no clip-summarizing prompt (its demo says
"coming soon"): with ``llm.prompts: sharecaptioner`` the span's captions go in its summary
format; otherwise :data:`CLIP_PROMPT` says which part of the video they cover.

The dataset is read file by file, row group by row group, keeping only the rows of the
requested videos: memory grows with the spans asked for, not with the dataset.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from operators.captions import sharecaptioner as sc
from operators.captions.diffsw_prompts import parse_caption, render_captions
from operators.llm.budget import Usage
from operators.llm.config import LLMConfig
from operators.llm.errors import BudgetExceededError, LLMCallError, PermanentCallError

logger = logging.getLogger(__name__)

CLIP_PROMPT = (
    "You are an expert video analyst who writes captions for a video-language training dataset.\n\n"
    "Below are timestamped descriptions of the keyframes of one part of a video, from {start} s to "
    "{end} s, in order. The first describes its keyframe in detail or describes what changed since "
    "an earlier keyframe; each later one describes what changed since the keyframe before it.\n\n"
    "{captions}\n\n"
    "From these descriptions, write one detailed description of this part of the video, in "
    "chronological order: the subjects and their appearance, their actions, the objects and the "
    "setting, changes of scene and the movements of the camera. Write precise, objective prose in "
    "one or two paragraphs, with no lists, headings or markdown, and without timestamps or frame "
    "numbers. Add nothing the descriptions do not support, and answer with the description alone."
)


@dataclass(frozen=True)
class Span:
    video_id: str
    start: float
    end: float


def read_spans(path: str) -> list[Span]:
    """Spans from a CSV with columns ``video_id,start,end``; ``ValueError`` naming the line."""
    from operators.io import open_binary

    spans = []
    with open_binary(path) as f:
        reader = csv.DictReader(line.decode("utf-8") for line in f)
        missing = {"video_id", "start", "end"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)} (need video_id,start,end)")
        for n, row in enumerate(reader, start=2):
            try:
                span = Span(str(row["video_id"]), float(row["start"]), float(row["end"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path} line {n}: start and end must be numbers") from None
            spans.append(check_span(span, f"{path} line {n}"))
    return spans


def check_span(span: Span, where: str = "span") -> Span:
    if not span.video_id or not 0 <= span.start <= span.end:
        raise ValueError(f"{where}: need a video id and 0 <= start <= end (got {span})")
    return span


def captions_in_span(captions: Iterable[Mapping[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [dict(c) for c in captions if start <= float(c["timestamp"]) <= end]


def clip_message(captions: Sequence[Mapping[str, Any]], span: Span, config: LLMConfig) -> dict[str, Any]:
    if config.prompts.set == "sharecaptioner":
        return {"role": "user", "content": sc.summary_text(captions)}
    text = CLIP_PROMPT.format(start=f"{span.start:.2f}", end=f"{span.end:.2f}", captions=render_captions(captions))
    return {"role": "user", "content": text}


def stored_captions(output: str, video_ids: set[str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(video_id, captions) of the wanted videos in ``OUTPUT/dataset/*.parquet``, streamed."""
    import pyarrow.parquet as pq

    from operators.io import filesystem, join

    fs, root = filesystem(join(output, "dataset"))
    for path in sorted(p for p in fs.glob(root.rstrip("/") + "/*.parquet")):
        with fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            if "captions" not in parquet.schema_arrow.names:
                continue
            for batch in parquet.iter_batches(columns=["video_id", "captions"], batch_size=4096):
                ids = batch.column(0).to_pylist()
                hits = [i for i, v in enumerate(ids) if v in video_ids]
                if hits:
                    captions = batch.column(1).take(hits).to_pylist()
                    for i, caps in zip(hits, captions, strict=True):
                        yield ids[i], caps or []


async def summarize_span(
    client: Any, config: LLMConfig, span: Span, captions: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """One output row: the span, its caption (or the reason it has none) and what it cost."""
    usage = Usage()
    row: dict[str, Any] = {"video_id": span.video_id, "start": span.start, "end": span.end}
    inside = captions_in_span(captions or [], span.start, span.end)
    row.update(num_captions=len(inside), caption=None, reason=None)
    if captions is None:
        row["reason"] = "unknown_video"
    elif not inside:
        row["reason"] = "no_captions_in_span"
    elif not await client.start_video():  # llm.budget_usd spent: nothing more is started
        row["reason"] = BudgetExceededError.REJECT_REASON
    else:
        try:
            result = await client.complete(
                [clip_message(inside, span, config)],
                max_tokens=config.summary_max_tokens,
                usage=usage,
                parse=parse_caption,
                model=config.text_model,
                caller=span.video_id,
                max_tokens_retry=config.max_tokens_retry,
            )
            row["caption"] = result.text
        except PermanentCallError as exc:
            if exc.fatal:
                raise
            row["reason"] = exc.reason
        except LLMCallError as exc:
            row["reason"] = exc.reason
    row["usage"] = usage.as_dict()
    return row
