"""Requests/min and tokens/min budgets shared by every caller of one endpoint.

``RateLimiter`` keeps all its state in one object with four async methods (``acquire``,
``reconcile``, ``observe_headers``, ``pause_for``), so one instance can sit behind a Ray named
actor and serve the whole cluster; it never imports Ray and takes an injectable clock.

Each budget is paced with GCRA (the "virtual scheduling" form of a token bucket): admissions
are spread evenly at ``rate = limit * (1 - headroom) / window`` with a burst tolerance of
``burst_fraction * window`` seconds. Then in ANY window of ``window`` seconds at most
``rate * (window + burst)`` units are admitted, which is below the provider's limit by about
``headroom - burst_fraction`` of it (2 % by default: slack for clock skew and in-flight requests),
while steady throughput stays at ``1 - headroom`` (97 %) of the limit.

One request larger than the burst (an image call can be 10 % of a tier-1 tokens/min budget) is
admitted once the budget is idle, which alone could overshoot a strict sliding window by its own
size; so tokens are also checked against a log of what was admitted in the last window (capped
at ``1 - burst_fraction`` of the limit). The log rarely binds; it makes the bound hold always.

Calls reserve more than they use (the prompt estimate plus ``max_tokens``); with
``llm.token_accounting: usage`` a caption uses about half of it. So a call is charged, when it
is admitted, at its expected size: the reservation times the LARGEST ratio used / reserved among
the last ``ratio_history`` reconciled calls (the full reservation until a call has reported;
see ``_ExpectedRatio``). ``reconcile`` then settles the real usage: more is charged at once
(the pace moves ahead, the log entry grows), less comes back as credit the next callers spend
first, and the caller waiting at the head of the queue is woken to use it (see ``_Pace``). A
call that never reports (an HTTP 500, a timeout) stays charged at its expected size. Counted at
their full reservations, the calls in flight (8-10 with 1-3 s answers) held ~3 % of a
tokens/min budget in the log and the unreported 500s ~2 % more: the log, not the pace, bound
at 0.94 of the limit. Without refunds at all, a saturated limiter reached only 0.5-0.8.

The window guarantee with expected sizes: the log counts every reported call at what it used
and every call in flight at the high-water ratio, so it stays exact unless the calls in flight
together use more than that ratio of their reservations; then the window can exceed its cap by
at most their difference, which the pace (97 % of the limit, so the log rarely binds) and the
1 % between the log's cap and the limit absorb (``tests/operators/llm/test_limiter.py`` checks
both in virtual time). With ``llm.token_accounting: reserved`` the ratio is ~1: calls are
charged their full reservation, as before.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from operators.llm.circuit import Circuit, circuit_from_config

if TYPE_CHECKING:
    from operators.llm.config import LLMConfig

logger = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    # The limiter may wait on an asyncio.Event with a timeout instead of ``sleep`` (to be woken
    # by a refund): only for clocks that are the event loop's own time.
    wakeable = True

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Permit:
    """Proof of one admitted request: what it reserved (``tokens``, the estimate) and what it
    was charged (``charged``, its expected size; None = ``tokens``), to reconcile with real usage."""

    tokens: int
    granted_at: float
    id: int = 0
    charged: float | None = None
    probe: bool = False  # the one call let through while the endpoint circuit is open

    @property
    def cost(self) -> float:
        return float(self.tokens if self.charged is None else self.charged)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds in an OpenAI reset header ("1s", "6m0s", "20ms", "1h2m3.5s", or a bare number)."""
    if text is None:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


class _Pace:
    """GCRA for one budget. ``tat`` is the theoretical time at which everything admitted so far
    would have drained at ``rate``; a request of cost c is admitted when the new ``tat`` lies at
    most ``tau`` ahead of now (or the budget is idle, for a request larger than the burst).

    Refunds (a call used less than it reserved) arrive after the call, when later callers are
    already paced near ``now``, and GCRA cannot move ``tat`` into the past; what cannot be
    taken back from ``tat`` becomes ``credit`` that the next admissions spend first. Without
    it a saturated limiter paces by the reservations (prompt + max_tokens), not by what calls
    really use, and loses up to half of a tokens/min budget. Credit is only kept while callers
    are waiting (it is dropped once the budget goes idle, so an idle limiter allows no more
    than ``tau`` of burst) and is capped at ``max_credit_fraction`` of the limit; the token log
    of ``RateLimiter`` still bounds every window exactly."""

    max_credit_fraction = 0.1

    def __init__(self, limit: float, window_s: float, headroom: float, burst_fraction: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.rate = limit * (1.0 - headroom) / window_s
        self.tau = burst_fraction * window_s
        self.tat = float("-inf")
        self.credit = 0.0
        # The schedule at full cost (credit ignored): callers have been waiting while it is
        # ahead of now. ``tat`` cannot tell, since spending credit leaves it behind now.
        self.busy_until = float("-inf")

    def _expire(self, now: float) -> None:
        if self.busy_until + self.tau < now:  # idle: nobody was waiting for the credit
            self.credit = 0.0

    def wait(self, cost: float, now: float) -> float:
        self._expire(now)
        cost = max(0.0, cost - self.credit)
        after = max(self.tat, now) + cost / self.rate
        return max(0.0, after - max(self.tau, cost / self.rate) - now)

    def take(self, cost: float, now: float) -> None:
        self._expire(now)
        used = min(self.credit, cost)
        self.credit -= used
        self.tat = max(self.tat, now) + (cost - used) / self.rate
        self.busy_until = max(self.busy_until, now) + cost / self.rate

    def adjust(self, delta: float, now: float) -> None:
        """Charge ``delta`` more, or refund it: back from ``tat`` down to ``now``, the rest as
        credit while callers are waiting (see the class docstring)."""
        if delta >= 0:
            self.tat += delta / self.rate
            self.busy_until += delta / self.rate
            return
        moved = self.tat + delta / self.rate
        floor = min(self.tat, now)
        if moved >= floor:
            self.tat = moved
            return
        self.tat = floor
        if self.busy_until + self.tau >= now:
            cap = self.max_credit_fraction * self.limit
            self.credit = min(cap, self.credit + (floor - moved) * self.rate)

    def adopt_remaining(self, remaining: float, now: float) -> None:
        """Never believe more is left than the provider says (other clients share the key)."""
        self.tat = max(self.tat, now + self.tau - remaining / self.rate)
        self.credit = min(self.credit, max(0.0, remaining))


class _WindowLog:
    """Exact sum of the tokens admitted in the last window, per request (to reconcile)."""

    def __init__(self, cap: float, window_s: float) -> None:
        self.cap, self.window_s = cap, window_s
        self.entries: deque[list[float]] = deque()  # [time, tokens, id]
        self.by_id: dict[int, list[float]] = {}
        self.total = 0.0

    def prune(self, now: float) -> None:
        while self.entries and self.entries[0][0] + self.window_s <= now:
            t, tokens, key = self.entries.popleft()
            self.total -= tokens
            self.by_id.pop(int(key), None)

    def wait(self, cost: float, now: float) -> float:
        self.prune(now)
        excess = self.total + cost - self.cap
        for t, tokens, _ in self.entries:
            if excess <= 0:
                break
            excess -= tokens
            if excess <= 0:
                return t + self.window_s - now
        return 0.0  # fits, or nothing left to wait for (a request above the cap, alone)

    def add(self, key: int, cost: float, now: float) -> None:
        entry = [now, float(cost), float(key)]
        self.entries.append(entry)
        self.by_id[key] = entry
        self.total += cost

    def adjust(self, key: int, actual: float) -> None:
        entry = self.by_id.get(key)
        if entry is not None:
            self.total += actual - entry[1]
            entry[1] = float(actual)


class _ExpectedRatio:
    """The largest ratio used / reserved among the last ``size`` reported calls (1.0 before the
    first report): what a call in flight is expected to use at most, as a share of its
    reservation. The maximum, not the mean: a short summary and a long caption differ by 2x, and
    the window must hold for the calls in flight whichever they are."""

    def __init__(self, size: int) -> None:
        self.ratios: deque[float] = deque(maxlen=max(1, size))
        self.value = 1.0

    def add(self, ratio: float) -> None:
        full = len(self.ratios) == self.ratios.maxlen
        dropped = self.ratios[0] if full else None
        self.ratios.append(ratio)
        if len(self.ratios) == 1:
            self.value = ratio
        elif dropped is not None and dropped >= self.value:
            self.value = max(self.ratios)
        else:
            self.value = max(self.value, ratio)


class RateLimiter:
    """Requests and tokens per window for every caller together. See the module docstring."""

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        window_s: float = 60.0,
        headroom: float = 0.03,
        burst_fraction: float = 0.01,
        clock: Clock | None = None,
        ratio_history: int = 200,
        circuit: Circuit | None = None,
    ) -> None:
        if not 0 <= burst_fraction <= headroom < 1:
            raise ValueError("need 0 <= burst_fraction <= headroom < 1")
        self._settings = (window_s, headroom, burst_fraction)
        self._requests = _Pace(requests_per_minute, *self._settings)
        self._tokens = _Pace(tokens_per_minute, *self._settings)
        self._token_log = _WindowLog(tokens_per_minute * (1 - burst_fraction), window_s)
        self._ratio = _ExpectedRatio(ratio_history)
        self._ids = itertools.count(1)
        self._clock = clock or MonotonicClock()
        self.circuit = circuit or Circuit(self._clock)
        self._paused_until = float("-inf")
        self._lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None  # set by a refund: the waiting caller re-checks
        self.admitted = 0
        self.pauses = 0

    @property
    def tokens_per_window(self) -> float:
        return self._tokens.limit

    async def acquire(self, est_tokens: int) -> Permit:
        """Wait until one more request of ``est_tokens`` fits both budgets (callers go in order),
        and, while the endpoint circuit is open, until this caller is the probe (raises
        ``EndpointOutageError`` after ``llm.outage_timeout_s``)."""
        if self._lock is None:  # created lazily: bound to the loop that first uses it
            self._lock = asyncio.Lock()
            self._wake = asyncio.Event()
        while True:
            probe = await self.circuit.wait()  # outside the lock: waiters must not block the probe
            permit = await self._admit(est_tokens, probe)
            if permit is not None:
                return permit

    async def _admit(self, est_tokens: int, probe: bool) -> Permit | None:
        """The permit once the budgets allow it; None when the circuit opened meanwhile (a
        caller queued for the rate limit must not go out into the outage)."""
        assert self._lock is not None
        async with self._lock:
            while True:
                if self.circuit.is_open and not probe:
                    return None
                now = self._clock.now()
                cost = est_tokens * self._ratio.value  # its expected size (module docstring)
                wait = max(
                    self._paused_until - now,
                    self._requests.wait(1, now),
                    self._tokens.wait(cost, now),
                    self._token_log.wait(cost, now),
                )
                if wait <= 0:
                    permit = Permit(
                        tokens=est_tokens, granted_at=now, id=next(self._ids), charged=cost, probe=probe
                    )
                    self._requests.take(1, now)
                    self._tokens.take(cost, now)
                    self._token_log.add(permit.id, cost, now)
                    self.admitted += 1
                    return permit
                await self._sleep(max(wait, 1e-6))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when a refund makes room: a caller that slept its whole
        computed wait would leave the refunded budget unused (a third of the tokens/min
        budget with 1-3 s calls that reserve twice what they use)."""
        if not getattr(self._clock, "wakeable", False) or self._wake is None:
            await self._clock.sleep(seconds)
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        """Correct the token budget once the response reports what the call really used (0 for
        a call the provider refused, a 429: it used nothing and says nothing of the others)."""
        if actual_tokens > 0 and permit.tokens > 0:
            self._ratio.add(actual_tokens / permit.tokens)
        self._tokens.adjust(actual_tokens - permit.cost, self._clock.now())
        self._token_log.adjust(permit.id, actual_tokens)
        if actual_tokens < permit.cost and self._wake is not None:
            self._wake.set()

    async def record_outcome(self, permit: Permit, failed: bool, caller: str) -> bool:
        """Tell the circuit how a call ended (``failed``: 5xx, timeout or dropped connection);
        True when the circuit is open, so the failure does not count against the retries."""
        return self.circuit.record(failed, caller, permit.probe)

    async def pause_for(self, seconds: float) -> None:
        """Stop every caller for ``seconds`` (a 429 with Retry-After)."""
        until = self._clock.now() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1
            logger.info("rate limited: every caller pauses for %.2f s", seconds)

    async def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Adopt the provider's view when it is stricter than ours (``x-ratelimit-*`` headers)."""
        h = {k.lower(): v for k, v in headers.items()}
        now = self._clock.now()
        for name, pace in (("requests", self._requests), ("tokens", self._tokens)):
            limit = _as_float(h.get(f"x-ratelimit-limit-{name}"))
            if limit is not None and 0 < limit < pace.limit:
                logger.warning(
                    "provider's %s limit is %g per window, below the configured %g; using it",
                    name,
                    limit,
                    pace.limit,
                )
                tat = pace.tat
                pace.__init__(limit, *self._settings)
                pace.tat = tat
                if name == "tokens":
                    self._token_log.cap = limit * (1 - self._settings[2])
            remaining = _as_float(h.get(f"x-ratelimit-remaining-{name}"))
            if remaining is not None:
                pace.adopt_remaining(max(0.0, remaining), now)

    def snapshot(self) -> dict[str, float]:
        return {
            "admitted": self.admitted,
            "pauses": self.pauses,
            "paused_for_s": max(0.0, self._paused_until - self._clock.now()),
            "expected_ratio": round(self._ratio.value, 4),
            **self.circuit.snapshot(),
        }


def limiter_from_config(config: LLMConfig, share: int = 1, clock: Clock | None = None) -> RateLimiter:
    """The limiter (and its outage circuit) of ``llm.*``; ``share`` divides the limits."""
    clock = clock or MonotonicClock()
    return RateLimiter(
        max(1, config.requests_per_minute // share),
        max(1, config.tokens_per_minute // share),
        config.rate_window_s,
        headroom=config.rate_headroom,
        clock=clock,
        circuit=circuit_from_config(config, clock),
    )


def _as_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long a 429 asks us to wait: ``retry-after-ms``, ``retry-after`` (seconds), else the
    reset header of whichever budget is exhausted."""
    h = {k.lower(): v for k, v in headers.items()}
    ms = _as_float(h.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000)
    seconds = parse_duration(h.get("retry-after"))
    if seconds is not None:
        return seconds
    waits = [
        parse_duration(h.get(f"x-ratelimit-reset-{name}"))
        for name in ("requests", "tokens")
        if _as_float(h.get(f"x-ratelimit-remaining-{name}")) in (0.0, None)
    ]
    waits = [w for w in waits if w is not None]
    return max(waits) if waits else None
