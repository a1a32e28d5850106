"""Run-wide services the API stage shares across the cluster: the rate limiter and budget
actors, and (for smoke runs) the local OpenAI-compatible test server."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from operators.llm.config import LLMConfig
from ray_jobs.adapter import resolve_resources
from ray_jobs.config import ConfigError, PipelineConfig

logger = logging.getLogger(__name__)


@dataclass
class LLMServices:
    """What the captioning operator needs from the run. Kept alive for the whole run: the
    limiter and budget actors die when the driver lets go of their handles."""

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
    if not config.steps.captions or llm.server.enabled or not llm.api_key_env:
        return
    if not os.environ.get(llm.api_key_env):
        raise ConfigError(
            f"steps.captions calls the API at {llm.base_url} but the environment variable "
            f"{llm.api_key_env} (llm.api_key_env) is not set; set it, or run without the API "
            "stage: --set steps.captions=false")


def start_llm_services(config: PipelineConfig) -> LLMServices | None:
    """Start the API stage's shared services, when the run has that stage (Ray must be up)."""
    if not config.steps.captions:
        return None
    from operators.captions.diffsw import DiffCaptioner
    from ray_jobs.llm_actors import (
        get_or_create_budget,
        limiter_for,
        new_run_id,
        start_test_server_if_enabled,
    )

    llm, stop = start_test_server_if_enabled(config.llm)
    run_id = new_run_id()
    probe = DiffCaptioner(llm, output=config.output)
    res = resolve_resources(probe, config.stages.get(probe.name))
    max_actors = (res.concurrency or (1, 1))[1]
    return LLMServices(llm=llm, limiter=limiter_for(llm, run_id, max_actors),
                       budget=get_or_create_budget(llm, run_id), stop_server=stop)
