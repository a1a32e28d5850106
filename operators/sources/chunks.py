"""Byte-range chunks of a line-oriented metadata file (CSV, JSONL), so that parallel listing
tasks each parse one part of a multi-GB file without anyone reading it all.

A line belongs to the chunk in which it starts: a task seeks to its chunk's start, skips the
rest of the line it lands in, and reads lines until one starts at or past the chunk's end.
Together the chunks hold every line exactly once. A CSV cell with a newline inside quotes
would be split wrongly, so chunking is only used for CSV files the config says are line-safe
(Panda-70M's metadata is: its captions are one-line list literals) and for JSONL.
"""

from __future__ import annotations

from collections.abc import Iterator

from operators.io import file_size, open_binary

#: Default chunk size: large enough that a task's setup is amortized, small enough that a
#: 70.8M-clip Panda-70M CSV (a few GB) becomes tens of parallel tasks.
DEFAULT_CHUNK_BYTES = 64 << 20


def byte_chunks(uri: str, chunk_bytes: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering the whole file; one chunk when ``chunk_bytes`` <= 0."""
    size = file_size(uri) or 0
    if chunk_bytes <= 0 or size <= chunk_bytes:
        return [(0, max(size, 1))]
    return [(start, min(start + chunk_bytes, size)) for start in range(0, size, chunk_bytes)]


def chunk_lines(uri: str, start: int, end: int, skip_header: bool) -> Iterator[tuple[int, str]]:
    """``(byte offset, line)`` for each line starting in ``[start, end)``, decoded as UTF-8
    (a leading byte-order mark dropped). ``skip_header`` leaves out the file's first line."""
    with open_binary(uri) as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the end of the line the previous chunk owns (or just its newline)
        elif skip_header:
            f.readline()
        while True:
            offset = f.tell()
            if offset >= end:
                return
            raw = f.readline()
            if not raw:
                return
            text = raw.decode("utf-8", errors="replace")
            if offset == 0:
                text = text.lstrip("\ufeff")
            yield offset, text


def header_line(uri: str) -> str:
    """The first line of a file (a CSV's header), without a byte-order mark."""
    with open_binary(uri) as f:
        return f.readline().decode("utf-8", errors="replace").lstrip("\ufeff")
