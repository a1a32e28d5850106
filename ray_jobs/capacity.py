"""Whether the stages' actor pools can start, and how long to wait until they can.

Ray Data starts every actor pool's minimum size up front; if those actors do not fit, the job
does not fail, it waits. A local Ray cannot grow, so the run fails at once. On a cluster the run
waits up to ``ray.capacity_timeout_s`` for the resources: when the cluster has no autoscaler
(``ray start --head`` by hand, or a read-only provider), it then fails with a message naming the
stages and resources; with an autoscaler that may still add nodes, it keeps waiting and logs
what it is waiting for.
"""

from __future__ import annotations

import json
import logging
import os
import time

from ray_jobs.adapter import capacity_problems, resolve_resources
from ray_jobs.config import ConfigError, PipelineConfig

logger = logging.getLogger(__name__)

#: Seconds between two looks at the cluster while waiting.
POLL_S = 5.0
#: Seconds between two progress lines while waiting.
LOG_EVERY_S = 60.0


def cluster_can_autoscale() -> bool:
    """True when an autoscaler that can launch nodes runs on the cluster.

    The head's monitor publishes its status under ``__autoscaling_status``; without an
    autoscaling config it runs a read-only provider whose node types are the live nodes
    themselves (``node_<id>``), which can add nothing."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    except Exception:  # noqa: BLE001 - no status at all: treated as no autoscaler
        return False
    if not raw:
        return False
    try:
        report = json.loads(raw).get("autoscaler_report") or {}
    except (ValueError, AttributeError):
        return False
    if report.get("pending_launches") or report.get("pending_nodes"):
        return True
    mapping = report.get("node_type_mapping") or {}
    node_types = set(mapping.values())
    return bool(node_types) and any(t != f"node_{node}" for node, t in mapping.items())


def check_capacity(config: PipelineConfig, ops: list, poll_s: float = POLL_S) -> None:
    """Return once the stages' pools fit the cluster; raise :class:`ConfigError` when they
    never can (see module)."""
    import ray

    from ray_jobs.dedup_shards import check_dedup_memory, dedup_actor_cpus

    stages = [(op, resolve_resources(op, config.stages.get(op.name))) for op in ops]
    on_cluster = bool(config.ray.address or os.environ.get("RAY_ADDRESS"))
    check_dedup_memory(config, on_cluster)

    def available() -> dict[str, float]:
        have = dict(ray.cluster_resources())
        have["CPU"] = have.get("CPU", 0.0) - dedup_actor_cpus(config)  # the dedup decider and parts
        return have

    problems = capacity_problems(stages, available())
    if not problems:
        return
    if not on_cluster:
        raise ConfigError("; ".join(problems))
    timeout = config.ray.capacity_timeout_s
    started = last_log = time.monotonic()
    autoscaler = cluster_can_autoscale()
    logger.warning("waiting for resources (%s): %s",
                   "the autoscaler may add them" if autoscaler else "no autoscaler",
                   "; ".join(problems))
    while problems:
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout and not autoscaler:
            raise ConfigError(
                f"the cluster cannot start the stages after waiting {waited:.0f}s "
                f"(ray.capacity_timeout_s={timeout:g}) and has no autoscaler to add resources: "
                + "; ".join(problems))
        if time.monotonic() - last_log >= LOG_EVERY_S:
            last_log = time.monotonic()
            logger.warning("still waiting for resources after %.0fs: %s", waited, "; ".join(problems))
        time.sleep(poll_s)
        problems = capacity_problems(stages, available())
        autoscaler = autoscaler or cluster_can_autoscale()
    logger.info("resources available after %.0fs", time.monotonic() - started)
