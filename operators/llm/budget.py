"""Spending: the cost of a call from its usage, the cluster-wide cap, and per-video tallies."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from operators.llm.config import ModelPrice


def call_cost(price: ModelPrice | None, prompt_tokens: int, completion_tokens: int) -> float:
    """USD of one call; 0.0 when the model has no price (a self-hosted endpoint)."""
    if price is None:
        return 0.0
    return (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6


class Budget:
    """The spending cap (``llm.budget_usd``). Pure and synchronous; the Ray wrapper can hold one
    per cluster (the client awaits its methods when they return awaitables).

    ``can_start()`` gates new videos only: calls of a video already started go on, so no paid
    work is thrown away. The overrun is at most the cost of the videos in flight at that moment.
    """

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = 0.0

    def can_start(self) -> bool:
        return self.limit_usd is None or self.spent_usd < self.limit_usd

    def charge(self, cost_usd: float) -> None:
        self.spent_usd += cost_usd

    def spent(self) -> float:
        return self.spent_usd


@dataclass
class Usage:
    """What one video (or a whole run) used. ``calls`` counts paid calls, refused ones included;
    ``cached_calls`` the answers taken from the cache at no cost."""

    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add_call(self, prompt_tokens: int, completion_tokens: int, cost_usd: float, cached: bool) -> None:
        if cached:
            self.cached_calls += 1
            return
        self.calls += 1
        self.input_tokens += prompt_tokens
        self.output_tokens += completion_tokens
        self.cost_usd += cost_usd

    def merge(self, other: Usage) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
