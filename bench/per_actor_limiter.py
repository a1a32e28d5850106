"""The per-actor pacing that bench/llm.py compares the cluster-wide limiter with.

Each captioning actor paces itself at ``limit / share`` (as Ray's own HTTP stage does): the
limits hold only while exactly ``share`` actors are busy. Not part of the tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operators.llm.config import LLMConfig
from operators.llm.limiter import Permit, RateLimiter


class PerActorLimiter:
    """Each captioning actor paces itself at ``limit / share``.

    Picklable and empty until first used, so every actor that unpickles the operator builds its
    own ``RateLimiter``. Kept for comparison with the cluster limiter (bench/llm.py): the limits
    hold only while exactly ``share`` actors are busy.
    """

    def __init__(self, config: LLMConfig, share: int) -> None:
        self.config, self.share = config, max(1, share)
        self._limiter: RateLimiter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "share": self.share, "_limiter": None}

    @property
    def limiter(self) -> RateLimiter:
        if self._limiter is None:
            c = self.config
            self._limiter = RateLimiter(max(1, c.requests_per_minute // self.share),
                                        max(1, c.tokens_per_minute // self.share),
                                        c.rate_window_s, headroom=c.rate_headroom)
        return self._limiter

    async def acquire(self, est_tokens: int) -> Permit:
        return await self.limiter.acquire(est_tokens)

    async def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        await self.limiter.reconcile(permit, actual_tokens)

    async def observe_headers(self, headers: Mapping[str, str]) -> None:
        await self.limiter.observe_headers(headers)

    async def pause_for(self, seconds: float) -> None:
        await self.limiter.pause_for(seconds)

    async def snapshot(self) -> dict[str, float]:
        return self.limiter.snapshot()
