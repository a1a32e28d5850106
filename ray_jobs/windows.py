"""The stages over the rows still to do, one window at a time, each window in a fresh driver
process on the same cluster.

A Ray Data driver keeps native memory for every task it ever ran (~30 KiB a block, measured in
docs/performance.md, "Control plane"): it outlives the Dataset, so a process that streams 70.8M
rows through the stages grows by hundreds of GB. The job's driver (the coordinator) therefore
runs no stage itself. It lists, resumes (the rows to do land in ``OUTPUT/pending/``, one file
per resume bucket), starts the run's shared actors (the API limiter and budget, the dedup
parts: named, owned by it, alive for the whole run) and then, for each window of pending files
(:func:`plan_windows`, ``ray.window_rows`` rows), starts ``python -m ray_jobs.windows SPEC``.
That process joins the same Ray cluster as a driver of its own, finds the shared actors by
name (the dedup decider among them: it keeps its pool from one window to the next), streams its files through the stages (:func:`ray_jobs.runner.stream_stages`) and leaves
its counts in a result file; its memory goes back when it exits. The coordinator adds the
counts up and starts the next window.

What a window costs: a process start and a Ray connection (~2-3 s), and the stages' workers
start anew (GPU stages load their models again). A window
that fails stops the run with its error; what it wrote stays written, and a rerun resumes
from there as after any stop.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray_jobs.config import ConfigError, PipelineConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    files: tuple[str, ...]
    rows: int


def plan_windows(files: Sequence[tuple[str, int]], window_rows: int) -> list[Window]:
    """``files`` (path, rows) cut into consecutive windows of at most ``window_rows`` rows; a
    file of more rows than that is a window of its own (a file is never split)."""
    windows: list[Window] = []
    group: list[str] = []
    rows = 0
    for path, count in files:
        if group and rows + count > window_rows:
            windows.append(Window(tuple(group), rows))
            group, rows = [], 0
        group.append(path)
        rows += count
    if group:
        windows.append(Window(tuple(group), rows))
    return windows


#: The error type of a window's process that ended without writing its result (killed).
WINDOW_EXIT = "WindowExit"


class WindowError(RuntimeError):
    """A window's process failed; the message names the window and its error."""


def run_windows(config: PipelineConfig, files: Sequence[tuple[str, int]], run_id: str,
                add_counts: Any) -> None:
    """Run every window of ``files`` in its own process, one after the other, and hand each
    window's counts (one :func:`ray_jobs.runner.counts_json` string) to ``add_counts``."""
    import ray

    windows = plan_windows(files, config.ray.window_rows)
    given = config.ray.address or os.environ.get("RAY_ADDRESS")
    local = not given
    # A Ray Client address (ray://) is the way in for a driver off the cluster; any other
    # driver is on a node of the cluster and joins its GCS, as the job's driver did.
    address = given if given and given.startswith("ray://") else ray.get_runtime_context().gcs_address
    with tempfile.TemporaryDirectory(prefix="sg4v-windows-") as folder:
        config_path = os.path.join(folder, "config.json")
        with open(config_path, "w") as f:
            json.dump(config.model_dump(mode="json"), f)
        done = 0
        for k, window in enumerate(windows, 1):
            started = time.perf_counter()
            logger.info("window %d of %d: %d rows (%d done before it)", k, len(windows), window.rows, done)
            spec = {"config": config_path, "files": list(window.files), "rows": window.rows,
                    "run_id": run_id, "address": address, "local": local,
                    "parent_pid": os.getpid(), "log_level": logging.getLogger().getEffectiveLevel(),
                    "result": os.path.join(folder, f"result-{k}.json")}
            result = _run_window_process(spec, os.path.join(folder, f"window-{k}.json"))
            if "error" in result:
                error = result["error"]
                message = f"window {k} of {len(windows)} ({window.rows} rows): {error['message']}"
                if error["type"] == "ConfigError":
                    raise ConfigError(message)
                where = "" if error["type"] == WINDOW_EXIT else "; its traceback is in the log above"
                raise WindowError(f"{message} ({error['type']}{where})")
            add_counts(result["counts"])
            done += window.rows
            logger.info("window %d of %d done in %.1fs", k, len(windows), time.perf_counter() - started)


def _stdout_for_child() -> Any:
    """The window's standard output goes to this process's standard error: the job's own
    standard output carries only its summary."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _run_window_process(spec: dict[str, Any], spec_path: str) -> dict[str, Any]:
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    process = subprocess.Popen([sys.executable, "-m", "ray_jobs.windows", spec_path],
                               stdout=_stdout_for_child())
    try:
        code = process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    try:
        with open(spec["result"]) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"error": {"type": WINDOW_EXIT,
                          "message": f"the window's process exited with code {code} and left no result"}}


def _exit_with_parent(parent_pid: int) -> None:
    """End this process when the coordinator is gone (its actors, which the stages call, are
    gone with it)."""
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(1.0)

    threading.Thread(target=watch, name="sg4v-parent-watch", daemon=True).start()


def run_window(spec: dict[str, Any]) -> str:
    """One window, in this process: join the cluster, find the run's actors, stream the files
    through the stages; the window's counts (a :func:`ray_jobs.runner.counts_json` string)."""
    import ray

    from ray_jobs.dedup_shards import start_dedup_decider
    from ray_jobs.listing import read_pending
    from ray_jobs.runner import RunSummary, add_tally, counts_json, stream_stages, worker_env
    from ray_jobs.services import attach_llm_services

    with open(spec["config"]) as f:
        config = PipelineConfig.model_validate(json.load(f))
    ray.init(address=spec["address"], runtime_env=worker_env() if spec["local"] else None,
             logging_level=logging.WARNING)
    services = attach_llm_services(config, spec["run_id"])
    # The job's deciding actor, by name (the arguments only matter to an actor not yet there).
    decider = start_dedup_decider(config, spec["run_id"], None)
    part = RunSummary(output=config.output)
    dataset = read_pending(spec["files"], config.output)
    for counts in stream_stages(config, dataset, spec["rows"], services, decider):
        add_tally(part, counts)
    return counts_json(part)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    _exit_with_parent(spec["parent_pid"])
    logging.basicConfig(level=spec.get("log_level", logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: dict[str, Any] = {"counts": run_window(spec)}
        code = 0
    except Exception as exc:  # noqa: BLE001  (reported to the coordinator, which stops the run)
        traceback.print_exc()
        result = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        code = 1
    tmp = spec["result"] + ".partial"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, spec["result"])
    return code


if __name__ == "__main__":
    sys.exit(main())
