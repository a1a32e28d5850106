"""Text-only API calls outside the pipeline (clip summaries, recaptioning): one client with the
run's cache, limiter and budget, and a bounded number of calls in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from operators.io import join
from operators.llm.config import LLMConfig

T = TypeVar("T")
R = TypeVar("R")


@asynccontextmanager
async def open_client(config: LLMConfig, output: str | None) -> AsyncIterator[Any]:
    """An ``LLMClient`` for ``config`` whose cache is the run's (``llm.cache_dir``, else
    ``OUTPUT/llm_cache``), so an answer already paid for is never paid again."""
    from operators.llm.cache import ResponseCache
    from operators.llm.client import LLMClient

    cache_dir = config.cache_dir or (join(output, "llm_cache") if output else None)
    cache = ResponseCache(cache_dir) if config.cache and cache_dir else None
    client = LLMClient(config, cache=cache)
    client.setup()
    try:
        yield client
    finally:
        await client.close()


async def map_bounded(items: Iterable[T], call: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """``call`` on every item, at most ``limit`` at once, results in input order."""
    slots = asyncio.Semaphore(max(1, limit))

    async def one(item: T) -> R:
        async with slots:
            return await call(item)

    return list(await asyncio.gather(*(one(item) for item in items)))
