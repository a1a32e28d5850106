"""The run's Ray services: what the API stage shares across the cluster.

One rate limiter and one budget per run, as named Ray actors, and the proxies the captioning
actors call them through; for smoke runs, the local OpenAI-compatible test server.

``RateLimiter`` and ``Budget`` (``operators.llm``) know nothing of Ray. Here each is wrapped in
an actor created once per run (``get_if_exists``, so every caller gets the same one), with
``num_cpus=0`` and a high ``max_concurrency`` so thousands of waiting ``acquire`` calls never
block a ``reconcile``. The proxies are small picklable objects with the same async methods;
the operator awaits them like the local objects (an ``ObjectRef`` is awaitable in asyncio).
The runner creates both on the driver and binds the proxies to the pipeline's API stage for the
whole run: the actors are not detached, so they end with the driver, or earlier once no handle
is left.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from operators.llm.circuit import EndpointOutageError
from operators.llm.config import LLMConfig
from operators.llm.limiter import Permit, RateLimiter, limiter_from_config
from ray_jobs.config import ConfigError, PipelineConfig
from testing.fake_server_config import FakeServerConfig

logger = logging.getLogger(__name__)

NAMESPACE = "sg4v"


def _limiter_from(config: LLMConfig) -> RateLimiter:
    # The limiter holds the outage circuit: in the named actor, one circuit for the cluster.
    return limiter_from_config(config)


class LimiterActor:
    """A ``RateLimiter`` behind an async Ray actor (all calls on the actor's one event loop)."""

    def __init__(self, config: LLMConfig) -> None:
        self.limiter = _limiter_from(config)

    async def acquire(self, est_tokens: int) -> Permit:
        return await self.limiter.acquire(est_tokens)

    async def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        await self.limiter.reconcile(permit, actual_tokens)

    async def observe_headers(self, headers: Mapping[str, str]) -> None:
        await self.limiter.observe_headers(headers)

    async def pause_for(self, seconds: float) -> None:
        await self.limiter.pause_for(seconds)

    async def record_outcome(self, permit: Permit, failed: bool, caller: str) -> bool:
        return await self.limiter.record_outcome(permit, failed, caller)

    async def snapshot(self) -> dict[str, float]:
        return self.limiter.snapshot()

class BudgetActor:
    """The run's ``Budget`` (spending cap) behind a Ray actor."""

    def __init__(self, limit_usd: float | None) -> None:
        from operators.llm.budget import Budget

        self.budget = Budget(limit_usd)

    async def can_start(self) -> bool:
        return self.budget.can_start()

    async def charge(self, cost_usd: float) -> None:
        self.budget.charge(cost_usd)

    async def spent(self) -> float:
        return self.budget.spent()


class LimiterProxy:
    """What ``LLMClient`` calls: the limiter actor's methods, awaited."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def acquire(self, est_tokens: int) -> Permit:
        import ray

        try:
            return await self.actor.acquire.remote(est_tokens)
        except ray.exceptions.RayTaskError as exc:
            # The circuit gave up (llm.outage_timeout_s): the caller's error, not Ray's wrapper.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, EndpointOutageError):
                raise EndpointOutageError(cause.detail) from None
            raise

    async def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        await self.actor.reconcile.remote(permit, actual_tokens)

    async def observe_headers(self, headers: Mapping[str, str]) -> None:
        # Only the headers the limiter reads travel to the actor.
        wanted = {k: v for k, v in headers.items() if k.lower().startswith(("x-ratelimit-", "retry-after"))}
        if wanted:
            await self.actor.observe_headers.remote(wanted)

    async def pause_for(self, seconds: float) -> None:
        await self.actor.pause_for.remote(seconds)

    async def record_outcome(self, permit: Permit, failed: bool, caller: str) -> bool:
        # The actor's circuit sees the calls of every captioning actor (cluster-wide outage).
        return await self.actor.record_outcome.remote(permit, failed, caller)

    async def snapshot(self) -> dict[str, float]:
        return await self.actor.snapshot.remote()


class BudgetProxy:
    """What ``LLMClient`` calls: the budget actor's methods, awaited."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def can_start(self) -> bool:
        return await self.actor.can_start.remote()

    async def charge(self, cost_usd: float) -> None:
        if cost_usd:
            await self.actor.charge.remote(cost_usd)

    async def spent(self) -> float:
        return await self.actor.spent.remote()


def new_run_id() -> str:
    return secrets.token_hex(6)


def _named_actor(cls: type, name: str, max_concurrency: int, *args: Any) -> Any:
    """The run's named actor ``name`` of ``cls`` (created on first call, then the same one)."""
    import ray

    options = {"name": name, "namespace": NAMESPACE, "get_if_exists": True, "num_cpus": 0,
               "max_concurrency": max_concurrency, "max_restarts": 0}
    return ray.remote(cls).options(**options).remote(*args)


def get_or_create_limiter(config: LLMConfig, run_id: str) -> LimiterProxy:
    """The run's cluster-wide limiter; ``acquire`` waits inside the actor, so its concurrency
    must cover every call in flight."""
    return LimiterProxy(_named_actor(LimiterActor, f"sg4v-limiter-{run_id}", 10_000, config))


def get_or_create_budget(config: LLMConfig, run_id: str) -> BudgetProxy:
    """The run's cluster-wide budget (``llm.budget_usd``; counts spending even with no cap)."""
    return BudgetProxy(_named_actor(BudgetActor, f"sg4v-budget-{run_id}", 1000, config.budget_usd))


def start_test_server_if_enabled(config: LLMConfig, server_config: FakeServerConfig
                                 ) -> tuple[LLMConfig, Callable[[], None]]:
    """With ``test_server.enabled``, start the local test server in a thread of this process
    and return the ``llm`` config pointed at it, and the function that stops it; else the
    config as is.

    The returned config has ``api_key_env: None``: the test server needs no key, so no key (the
    user's real one least of all) is read or sent, and workers need no variable set. Its model
    is priced at ``test_server.price`` unless ``llm.prices`` names it. The server listens on
    ``test_server.host`` (127.0.0.1 by default): fine for a local Ray, not reachable from the
    other nodes of a cluster.
    """
    if not server_config.enabled:
        return config, lambda: None
    from testing.fake_server import FakeOpenAIServer

    server = FakeOpenAIServer(server_config)
    url, stop = server.start_in_thread()
    logger.info("test_server.enabled: captions come from the local test server at %s", url)
    # The test server counts the tokens responses report, not prompt + max_tokens.
    prices = {config.model: server_config.price, **config.prices}
    update = {"base_url": url, "api_key_env": None, "token_accounting": "usage", "prices": prices}
    return config.model_copy(update=update), stop


@dataclass
class LLMServices:
    """The run-time handles of the API stage. Kept alive for the whole run: the limiter and
    budget actors die when the driver lets go of their handles."""

    llm: LLMConfig
    limiter: Any
    budget: Any
    stop_server: Callable[[], None]

    def close(self) -> None:
        self.stop_server()


def check_api_key(config: PipelineConfig) -> None:
    """Fail before any work when the API stage will run but its key is not in the environment
    (rather than when the first captioning actor starts, minutes into the run)."""
    llm = config.llm
    if not config.steps.captions or config.test_server.enabled or not llm.api_key_env:
        return
    if not os.environ.get(llm.api_key_env):
        raise ConfigError(
            f"steps.captions calls the API at {llm.base_url} but the environment variable "
            f"{llm.api_key_env} (llm.api_key_env) is not set; set it, or run without the API "
            "stage: --set steps.captions=false")


def start_llm_services(config: PipelineConfig, run_id: str | None = None) -> LLMServices | None:
    """Start the API stage's shared services, when the run has that stage (Ray must be up)."""
    if not config.steps.captions:
        return None
    llm, stop = start_test_server_if_enabled(config.llm, config.test_server)
    run_id = run_id or new_run_id()
    return LLMServices(llm=llm, limiter=get_or_create_limiter(llm, run_id),
                       budget=get_or_create_budget(llm, run_id), stop_server=stop)


def attach_llm_services(config: PipelineConfig, run_id: str) -> LLMServices | None:
    """The services :func:`start_llm_services` started for run ``run_id``, from another driver
    of the same cluster (a window's process, :mod:`ray_jobs.windows`). ``config.llm`` is the
    one the services returned (already pointed at the test server, if the run has one)."""
    if not config.steps.captions:
        return None
    return LLMServices(llm=config.llm, limiter=get_or_create_limiter(config.llm, run_id),
                       budget=get_or_create_budget(config.llm, run_id), stop_server=lambda: None)
