"""The per-actor pacing that bench/llm.py compares the cluster-wide limiter with.

Each captioning actor paces itself at ``limit / share`` (as Ray's own HTTP stage does): the
limits hold only while exactly ``share`` actors are busy. Not part of the tool.
"""

from __future__ import annotations

from typing import Any

from operators.llm.config import LLMConfig
from operators.llm.limiter import RateLimiter, limiter_from_config
from ray_jobs.services import LimiterActor  # the same delegating methods, without Ray


class PerActorLimiter(LimiterActor):
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
            self._limiter = limiter_from_config(self.config, self.share)
        return self._limiter
