"""The cluster-wide limiter and budget actors, on a small local Ray."""

from __future__ import annotations

import asyncio
import importlib
import pickle
import uuid
from pathlib import Path

import pytest

from ray_jobs.services import get_or_create_budget, get_or_create_limiter, start_test_server_if_enabled
from testing.fake_server import FakeOpenAIServer
from testing.fake_server_config import FakeServerConfig
from tests.operators.captions.test_diffsw import make_batch
from tests.operators.llm.conftest import llm_config
from tests.operators.llm.test_limiter import max_in_window

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def test_callers_in_four_processes_share_one_limit(ray_local):
    ray = ray_local
    config = llm_config("http://unused/v1", requests_per_minute=20, rate_window_s=2.0)
    run_id = uuid.uuid4().hex[:8]
    proxy = get_or_create_limiter(config, run_id)

    @ray.remote(num_cpus=0)
    def caller(n: int) -> list[float]:
        again = get_or_create_limiter(config, run_id)  # by name, from another process

        async def main() -> list[float]:
            permits = await asyncio.gather(*(again.acquire(1) for _ in range(n)))
            return [p.granted_at for p in permits]

        return asyncio.run(main())

    times = [t for part in ray.get([caller.remote(15) for _ in range(4)]) for t in part]
    assert len(times) == 60
    # granted_at is the limiter actor's clock: one clock for every caller
    assert max_in_window(times, [1] * 60, 2.0) <= 20
    assert 59 / (max(times) - min(times)) >= 0.9 * 20 / 2.0  # and the limit is used
    snapshot = ray.get(proxy.actor.snapshot.remote())
    assert snapshot["admitted"] == 60


def test_budget_actor_is_shared(ray_local):
    ray = ray_local
    config = llm_config("http://unused/v1", budget_usd=1.0)
    run_id = uuid.uuid4().hex[:8]
    budget = get_or_create_budget(config, run_id)  # the driver creates it and holds it

    @ray.remote(num_cpus=0)
    def spend() -> None:
        asyncio.run(get_or_create_budget(config, run_id).charge(0.3))

    ray.get([spend.remote() for _ in range(3)])
    assert asyncio.run(budget.spent()) == pytest.approx(0.9) and asyncio.run(budget.can_start())
    ray.get(spend.remote())
    assert not asyncio.run(budget.can_start())


def test_per_actor_limiters_are_independent_copies(monkeypatch):
    # The per-actor pacing bench/llm.py compares the cluster limiter with (bench/ is the
    # script's folder there, so its modules import by their own names).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    module = importlib.import_module("per_actor_limiter")
    config = llm_config("http://unused/v1", requests_per_minute=600, tokens_per_minute=100_000)
    limiter = module.PerActorLimiter(config, 4)
    a, b = pickle.loads(pickle.dumps(limiter)), pickle.loads(pickle.dumps(limiter))
    assert a.limiter is not b.limiter and a.limiter._requests.limit == 150
    assert a.limiter._tokens.limit == 25_000


def test_test_server_switch():
    config = llm_config("https://api.example.com/v1", api_key_env="OPENAI_API_KEY")
    same, stop = start_test_server_if_enabled(config, FakeServerConfig())
    assert same is config
    stop()
    unpriced = config.model_copy(update={"prices": {}})
    local, stop = start_test_server_if_enabled(unpriced, FakeServerConfig(enabled=True))
    try:
        assert local.base_url.startswith("http://127.0.0.1:") and local.api_key_env is None
        assert local.price() == FakeServerConfig().price  # the test server's model is priced
    finally:
        stop()


def test_captioning_stage_on_ray_data_with_the_cluster_limiter(ray_local, tmp_path):
    ray = ray_local
    from operators.captions.diffsw import DiffCaptioner
    from ray_jobs.adapter import apply_operator

    server = FakeOpenAIServer(FakeServerConfig(latency_s=(0.05, 0.1)))
    url, stop = server.start_in_thread()
    try:
        config = llm_config(url, concurrency_per_actor=4, budget_usd=10.0)
        run_id = uuid.uuid4().hex[:8]
        batch = make_batch(tmp_path, {f"v{i}": [0.0, 1.0, 2.0] for i in range(8)})
        rows = [{k: (list(v[i]) if k != "video_id" else v[i]) for k, v in batch.items()} for i in range(8)]
        op = DiffCaptioner(
            config,
            output=str(tmp_path),
            limiter=get_or_create_limiter(config, run_id),
            budget=get_or_create_budget(config, run_id),
        )
        from operators.base import Resources

        op.resources = Resources(num_cpus=0.25, concurrency=(2, 2), batch_size=4)
        out = apply_operator(ray.data.from_items(rows), op).take_all()
        assert len(out) == 8 and all(r.get("reject_reason") is None for r in out)
        assert all(len(r["captions"]) == 3 and r["summary"] for r in out)
        assert server.stats["served"] == 32
        limiter = get_or_create_limiter(config, run_id)
        assert ray.get(limiter.actor.snapshot.remote())["admitted"] == 32
        spent = asyncio.run(get_or_create_budget(config, run_id).spent())
        assert spent == pytest.approx(sum(r["usage"]["cost_usd"] for r in out))
    finally:
        stop()
