"""The outage circuit: unit rules in virtual time, a 10-minute outage of the test server in
virtual time through DiffCaptioner, and one short outage in real time."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from operators.llm.circuit import Circuit, EndpointOutageError
from operators.llm.limiter import limiter_from_config
from testing.fake_server import FakeOpenAIServer
from testing.fake_server_config import FakeServerConfig
from tests.operators.captions.test_diffsw import caption, make_batch
from tests.operators.llm.conftest import llm_config
from tests.operators.llm.test_limiter import FakeClock


def test_one_failing_caller_does_not_open_it():
    circuit = Circuit(FakeClock(), failures_to_open=3, min_callers=2)
    assert not any(circuit.record(True, "video-a") for _ in range(10))
    assert not circuit.is_open


def test_consecutive_failures_from_several_callers_open_it_and_an_answer_closes_it():
    circuit = Circuit(FakeClock(), failures_to_open=3, min_callers=2)
    assert not circuit.record(True, "a")
    assert not circuit.record(False, "b")  # an answer resets the count
    assert not circuit.record(True, "a")
    assert not circuit.record(True, "a")
    assert circuit.record(True, "b")
    assert circuit.is_open
    assert not circuit.record(False, "c")
    assert not circuit.is_open


def test_open_circuit_lets_one_probe_through_with_doubling_intervals():
    clock = FakeClock()
    circuit = Circuit(clock, failures_to_open=2, min_callers=2, probe_base_s=2, probe_max_s=16)
    circuit.record(True, "a")
    circuit.record(True, "b")
    opened = clock.now()

    async def run() -> list[float]:
        probe_times = []
        waiters = [asyncio.ensure_future(circuit.wait()) for _ in range(20)]
        for _ in range(6):  # six failed probes, then the endpoint answers
            while True:
                await asyncio.sleep(0)
                done = [w for w in waiters if w.done()]
                if done:
                    break
            assert len(done) == 1 and done[0].result() is True  # one probe at a time
            waiters.remove(done[0])
            probe_times.append(clock.now() - opened)
            circuit.record(True, "p", probe=True)
        waiters.append(asyncio.ensure_future(circuit.wait()))
        while not any(w.done() for w in waiters):
            await asyncio.sleep(0)
        probe_times.append(clock.now() - opened)
        circuit.record(False, "p", probe=True)
        results = await asyncio.gather(*waiters)
        assert results.count(False) == len(waiters) - 1
        return probe_times

    times = asyncio.run(run())
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps == pytest.approx([2, 4, 8, 16, 16, 16, 16])
    assert circuit.probes == 7 and not circuit.is_open


def test_outage_longer_than_the_timeout_fails_every_waiter():
    clock = FakeClock()
    circuit = Circuit(clock, failures_to_open=1, min_callers=1, probe_base_s=10, outage_timeout_s=60)
    circuit.record(True, "a")

    async def run() -> list[object]:
        async def caller() -> None:
            while True:
                probe = await circuit.wait()
                circuit.record(True, "x", probe=probe)

        return await asyncio.gather(*(caller() for _ in range(5)), return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, EndpointOutageError) and r.reason == "api_unavailable" for r in results)
    assert clock.now() - 1000 == pytest.approx(60, abs=0.1)
    assert circuit.probes <= 4


def _outage_run(tmp_path, clock, outage_s, start_in, videos, settings, real_time=False):
    server = FakeOpenAIServer(FakeServerConfig(), record=True, clock=None if real_time else clock.now)
    url, stop = server.start_in_thread()
    try:
        config = llm_config(url, cache=False, **settings)
        limiter = limiter_from_config(config, clock=None if real_time else clock)
        server.outage(outage_s, "503", start_in=start_in)
        batch = make_batch(tmp_path, videos)
        out = caption(config, tmp_path, batch, limiter=limiter)
        return out, server.requests, limiter.snapshot()
    finally:
        stop()


def test_ten_minute_outage_in_virtual_time_costs_few_probes_and_rejects_nothing(tmp_path):
    """A 10-minute outage 20 s into a run at 60 requests/min: without the circuit, every video
    in flight would spend its 6 attempts in ~6 s and be rejected."""
    clock = FakeClock()
    videos = {f"v{i:02d}": [0.0, 2.0, 4.0, 6.0] for i in range(12)}
    settings = dict(requests_per_minute=60, max_attempts=6)
    out, requests, snap = _outage_run(tmp_path, clock, 600.0, 20.0, videos, settings)
    assert "reject_reason" not in out or not any(out["reject_reason"])
    assert all(s for s in out["summary"])
    outcomes = Counter(r["outcome"] for r in requests)
    assert outcomes["ok"] == 12 * 5  # 4 captions and a summary per video, each paid once
    assert snap["circuit_opened"] == 1 and snap["circuit_probes"] <= 12
    # Every request into the outage: the 3 that opened the circuit, those already on the wire
    # then (at most one per video; 1 to 8 seen here, as virtual pacing bunches the sends), and
    # the probes (10: 2 s doubling to 120 s).
    assert snap["circuit_probes"] <= 10
    assert outcomes["503"] <= 3 + len(videos) + snap["circuit_probes"]
    # The run waited the outage (virtual 1020-1620 s) out: the first answer after it came from
    # the probe that found the endpoint back, at most probe_max_s (120 s) late.
    resumed = min(r["t"] for r in requests if r["outcome"] == "ok" and r["t"] > 1020)
    assert 1620 <= resumed <= 1620 + 120


def test_short_outage_in_real_time(tmp_path):
    videos = {f"r{i}": [0.0, 1.0, 2.0] for i in range(6)}
    settings = dict(probe_base_s=0.2, probe_max_s=0.8, max_attempts=3)
    out, requests, snap = _outage_run(tmp_path, None, 3.0, 0.0, videos, settings, real_time=True)
    assert "reject_reason" not in out or not any(out["reject_reason"])
    outcomes = Counter(r["outcome"] for r in requests)
    assert outcomes["ok"] == 6 * 4
    assert snap["circuit_opened"] >= 1
    # 3 s at 0.2, 0.4, 0.8, 0.8... s between probes: a handful, not a request per retry.
    assert outcomes["503"] <= 6 + snap["circuit_probes"] and snap["circuit_probes"] <= 8


def test_queue_full_503_pauses_every_caller_like_a_429_and_is_no_outage(tmp_path, caplog):
    server = FakeOpenAIServer(FakeServerConfig(), record=True)
    url, stop = server.start_in_thread()
    try:
        config = llm_config(url, cache=False, max_attempts=3)
        limiter = limiter_from_config(config)
        server.queue_faults(["queue_full"] * 4)
        batch = make_batch(tmp_path, {f"q{i}": [0.0, 1.0] for i in range(4)})
        out = caption(config, tmp_path, batch, limiter=limiter)
    finally:
        stop()
    assert "reject_reason" not in out or not any(out["reject_reason"])
    assert [r["outcome"] for r in server.requests].count("queue_full") == 4
    busy = [r for r in caplog.records if "server_busy" in r.getMessage()]
    assert len(busy) == 4  # classified as a busy server (a pause for every caller), not an outage
    assert limiter.snapshot()["circuit_opened"] == 0
