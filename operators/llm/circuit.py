"""The endpoint circuit: during an outage every caller waits and one probe at a time asks.

Bounded per-request retries are right for a failure of one request, and wrong for an outage
of the endpoint: a 20 s run of 503s at one request per second spent 16 calls and exhausted one
video's retries. So the limiter holds a circuit (one per run, in the limiter actor, so it is
cluster-wide):

- closed: calls go out. Endpoint failures (5xx, timeouts, dropped connections) on
  ``failures_to_open`` consecutive calls from at least ``min_callers`` different callers (videos)
  open it; any answer from the endpoint (success, 4xx, 429) resets the count. One video failing
  again and again is a per-request failure and keeps its bounded retries.
- open: no call goes out but a probe. The first waiter sleeps until the next probe time and is
  admitted alone; the others wait on an event (no clock: they add no virtual time in tests).
  A failed probe doubles the interval (``probe_base_s`` up to ``probe_max_s``); any answer
  closes the circuit and every waiter goes on. A call that fails while the circuit is open
  (a probe, or one in flight when it opened) does not count against its video's retries.
- After ``outage_timeout_s`` open, every waiter raises ``EndpointOutageError`` (reason
  ``api_unavailable``: the video is rejected and a rerun tries it again).

With the defaults (2 s doubling to 120 s) a 10-minute outage costs 10 probes; an endpoint that
comes back waits at most ``probe_max_s`` to be noticed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from operators.llm.errors import LLMCallError

if TYPE_CHECKING:
    from operators.llm.config import LLMConfig

logger = logging.getLogger(__name__)


class _Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class EndpointOutageError(LLMCallError):
    """The endpoint stayed down longer than ``llm.outage_timeout_s``."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("api_unavailable", detail)


class Circuit:
    """See the module docstring. ``wait()`` before each call, ``record()`` after it."""

    def __init__(
        self,
        clock: _Clock,
        *,
        failures_to_open: int = 3,
        min_callers: int = 2,
        probe_base_s: float = 2.0,
        probe_max_s: float = 120.0,
        outage_timeout_s: float = 1800.0,
        probe_lost_after_s: float = 300.0,
    ) -> None:
        self._clock = clock
        self.failures_to_open, self.min_callers = failures_to_open, min_callers
        self.probe_base_s, self.probe_max_s = probe_base_s, probe_max_s
        self.outage_timeout_s, self.probe_lost_after_s = outage_timeout_s, probe_lost_after_s
        self.open_since: float | None = None
        self._failures = 0
        self._callers: set[str] = set()
        self._next_probe = 0.0
        self._interval = probe_base_s
        self._probe_started: float | None = None  # a probe is in flight
        self._holder = False  # a waiter is sleeping until the next probe time
        self._changed: asyncio.Event | None = None
        self.opened = 0
        self.probes = 0
        self.outage_s = 0.0

    @property
    def is_open(self) -> bool:
        return self.open_since is not None

    def _event(self) -> asyncio.Event:
        if self._changed is None:  # made lazily: bound to the loop that first uses it
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        event = self._event()
        event.set()
        self._changed = asyncio.Event()

    async def _sleep(self, seconds: float) -> None:
        """Sleep until the next probe time, or until the circuit closes (real time only)."""
        if not getattr(self._clock, "wakeable", False):
            await self._clock.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._event().wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def _check_timeout(self, now: float) -> None:
        if self.open_since is not None and now - self.open_since > self.outage_timeout_s:
            self._notify()  # the other waiters give up too
            raise EndpointOutageError(
                f"the endpoint failed every call for {now - self.open_since:.0f} s "
                f"(llm.outage_timeout_s={self.outage_timeout_s:g}; {self.probes} probes)"
            )

    async def wait(self) -> bool:
        """Return when a call may go out: False while closed, True for the one probe."""
        while self.open_since is not None:
            now = self._clock.now()
            self._check_timeout(now)
            if self._probe_started is not None and now - self._probe_started > self.probe_lost_after_s:
                self._probe_started = None  # its caller died without reporting
            if self._probe_started is None and not self._holder:
                deadline = self.open_since + self.outage_timeout_s
                delay = min(self._next_probe, deadline + 1e-3) - now
                if delay <= 0:
                    self._probe_started = now
                    self.probes += 1
                    return True
                self._holder = True
                try:
                    await self._sleep(delay)
                finally:
                    self._holder = False
                continue
            event = self._event()
            if getattr(self._clock, "wakeable", False):
                # Real time: wake up in time to take over a probe whose caller never reports.
                try:
                    await asyncio.wait_for(event.wait(), timeout=self.probe_lost_after_s)
                except asyncio.TimeoutError:
                    pass
            else:
                await event.wait()
        return False

    def record(self, failed: bool, caller: str, probe: bool = False) -> bool:
        """Note a call's outcome (``failed``: an endpoint failure); True when the circuit is
        open afterwards, so the failure must not count against the caller's retries."""
        now = self._clock.now()
        if not failed:
            self._failures, self._callers = 0, set()
            if self.open_since is not None:
                self.outage_s += now - self.open_since
                logger.warning(
                    "endpoint answers again after %.1f s: circuit closed (%d probes)",
                    now - self.open_since,
                    self.probes,
                )
                self.open_since, self._probe_started = None, None
                self._notify()
            return False
        if self.open_since is not None:
            if probe:
                self._interval = min(self.probe_max_s, self._interval * 2)
                self._next_probe = now + self._interval
                self._probe_started = None
                self._notify()
            return True
        self._failures += 1
        self._callers.add(caller)
        if self._failures >= self.failures_to_open and len(self._callers) >= self.min_callers:
            self.open_since, self.opened = now, self.opened + 1
            self._interval = self.probe_base_s
            self._next_probe = now + self._interval
            logger.warning(
                "endpoint failed %d consecutive calls from %d callers: circuit open, every caller "
                "waits, one probe at a time",
                self._failures,
                len(self._callers),
            )
            return True
        return False

    def snapshot(self) -> dict[str, float]:
        return {
            "circuit_open": float(self.is_open),
            "circuit_opened": self.opened,
            "circuit_probes": self.probes,
            "outage_s": round(self.outage_s, 3),
        }


def circuit_from_config(config: LLMConfig, clock: _Clock) -> Circuit:
    """The circuit of ``llm.*`` settings, on ``clock``."""
    return Circuit(
        clock,
        failures_to_open=config.circuit_failures,
        min_callers=config.circuit_callers,
        probe_base_s=config.probe_base_s,
        probe_max_s=config.probe_max_s,
        outage_timeout_s=config.outage_timeout_s,
        probe_lost_after_s=2 * config.timeout_s + config.probe_max_s,
    )
