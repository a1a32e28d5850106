"""Control-plane benchmark: the driver, the listing and resume at 100k and 1M listed clips.

Two inputs whose files do not exist, so nothing is decoded and every row is rejected (the cost
measured is the job's own bookkeeping): a Panda-70M-format CSV (5 clips per video; rejected as
``missing_file`` by the source) and a manifest CSV (rejected by the probe). Each size runs in a
fresh process (`--child`) so that peak RSS is that run's alone. Reported per run:

- listing time (wall) and the driver's CPU seconds for it;
- rows/s through the pipeline (probe, filter, frames, writer; model stages off) by wall clock,
  and per CPU-second: the machine's whole CPU time over the run (``/proc/stat``: every process,
  so an upper bound of the job's own on a quiet machine; a window's Ray workers end with their
  window and are not the bench's children, so counting the bench's process tree would miss
  them), and that process tree's for comparison with the figures before windows;
- the driver's peak RSS: the job's own process and the window process it runs the stages in
  (``ray.window_rows``, :mod:`ray_jobs.windows`) together, polled every 0.1 s, and each alone
  (``ru_maxrss`` of the job's process; the largest window process); the object store's peak
  bytes in use (polled);
- resume: a rerun on the full output (every row already decided), wall seconds.

Usage: ``python bench/scale.py [--sizes 100000 1000000] [--window-rows N] [--json bench/results/scale.json]``
(``--window-rows 0``: the stages in the job's own process, as before windows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import cpu_name  # noqa: E402


def write_panda_csv(path: Path, clips: int) -> None:
    """Panda-70M's columns; videos of 5 clips, none downloaded."""
    with path.open("w") as f:
        f.write("videoID,url,timestamp,caption,matching_score\n")
        for v in range(clips // 5):
            spans = ", ".join(f"['0:00:{k * 5:02d}.000', '0:00:{k * 5 + 4:02d}.500']" for k in range(5))
            caps = ", ".join(f"'clip {k} of video {v}'" for k in range(5))
            f.write(f'vid{v:08d},https://youtu.be/x,"[{spans}]","[{caps}]","[0.5, 0.5, 0.5, 0.5, 0.5]"\n')


def write_manifest(path: Path, clips: int) -> None:
    with path.open("w") as f:
        f.write("uri,start,end\n")
        for i in range(clips // 5):
            for k in range(5):
                f.write(f"/nonexistent/v{i:08d}.mp4,{k * 5},{k * 5 + 5}\n")


def object_store_used() -> int:
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
    return int(reply.store_stats.object_store_bytes_used)


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; idle and iowait
    left out), from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle, iowait
    busy -= sum(fields[8:10]) if len(fields) >= 10 else 0  # guest time is already in user
    return busy / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds() -> float:
    """CPU seconds of this process, its live descendants, and its ended children (window
    processes)."""
    import psutil

    me = psutil.Process()
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ended.ru_utime + ended.ru_stime
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def driver_rss() -> tuple[int, int]:
    """RSS of this process, and of its window processes (together), in bytes."""
    import psutil

    me = psutil.Process()
    windows = 0
    for proc in me.children():
        try:
            if "ray_jobs.windows" in " ".join(proc.cmdline()):
                windows += proc.memory_info().rss
        except psutil.Error:
            continue
    return me.memory_info().rss, windows


def child(kind: str, clips: int, work: Path, window_rows: int | None) -> dict:
    """One size, one input kind, in this process: listing, run, rerun."""
    import ray

    from ray_jobs.config import PipelineConfig
    from ray_jobs.listing import write_listing
    from ray_jobs.runner import init_ray, run_pipeline

    work.mkdir(parents=True, exist_ok=True)
    data = work / f"{kind}.csv"
    (write_panda_csv if kind == "panda70m" else write_manifest)(data, clips)
    source = ({"kind": "panda70m", "csv": str(data), "root": str(work / "videos")} if kind == "panda70m"
              else {"kind": "manifest", "path": str(data), "allowed_roots": ["/nonexistent"],
                    "chunk_bytes": 16 << 20})
    config = PipelineConfig.model_validate({
        "input": [source], "output": str(work / f"out-{kind}"),
        "ray": {"num_cpus": 2},
        "steps": {"short_caption": False, "dedup": False, "keyframes": False, "captions": False},
    })
    if window_rows is not None:
        config = config.model_copy(update={"ray": config.ray.model_copy(update={"window_rows": window_rows})})
    init_ray(config)
    peak = {"store": 0, "together": 0, "window": 0}
    stop = threading.Event()

    def poll_store() -> None:
        while not stop.is_set():
            try:
                peak["store"] = max(peak["store"], object_store_used())
            except Exception:  # noqa: BLE001 - a poll that fails only misses one sample
                pass
            stop.wait(0.5)

    def poll_rss() -> None:
        while not stop.is_set():
            own, windows = driver_rss()
            peak["together"] = max(peak["together"], own + windows)
            peak["window"] = max(peak["window"], windows)
            stop.wait(0.1)

    threading.Thread(target=poll_store, daemon=True).start()
    threading.Thread(target=poll_rss, daemon=True).start()
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    listing = write_listing(config)
    listing_s, listing_cpu = time.perf_counter() - t0, time.process_time() - c0
    cpu0, machine0, t1 = tree_cpu_seconds(), machine_cpu_seconds(), time.perf_counter()
    summary = run_pipeline(config)
    run_s, run_cpu = time.perf_counter() - t1, tree_cpu_seconds() - cpu0
    machine_cpu = machine_cpu_seconds() - machine0
    t2 = time.perf_counter()
    again = run_pipeline(config)
    resume_s = time.perf_counter() - t2
    stop.set()
    result = {
        "kind": kind, "clips": clips, "listed": listing.rows,
        "listing_s": round(listing_s, 2), "listing_driver_cpu_s": round(listing_cpu, 2),
        "run_s": round(run_s, 2), "rows_per_s": round(summary.kept + summary.rejected_total) / run_s,
        "rows_per_cpu_s": round((summary.kept + summary.rejected_total) / max(machine_cpu, 1e-9), 1),
        "machine_cpu_s": round(machine_cpu, 1),
        "rows_per_tree_cpu_s": round((summary.kept + summary.rejected_total) / max(run_cpu, 1e-9), 1),
        "processed": summary.kept + summary.rejected_total,
        "resume_s": round(resume_s, 2), "resume_processed": again.kept + again.rejected_total,
        "resume_skipped": again.skipped_done,
        "window_rows": config.ray.window_rows,
        "driver_rss_start_mib": round(rss_start, 1),
        # The job's process and its window process together (polled), never less than the
        # job's process alone.
        "driver_peak_rss_mib": round(max(peak["together"] / 2**20,
                                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), 1),
        "job_process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "window_process_peak_rss_mib": round(peak["window"] / 2**20, 1),
        "object_store_peak_mib": round(peak["store"] / 2**20, 1),
    }
    result["rows_per_s"] = round(result["rows_per_s"], 1)
    ray.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["manifest", "panda70m"])
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "scale.json"))
    parser.add_argument("--window-rows", type=int, default=None,
                        help="ray.window_rows for the runs (default: the config's default)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CLIPS", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, clips, work = args.child
        print(json.dumps(child(kind, int(clips), Path(work), args.window_rows)))
        return
    results = []
    for clips in args.sizes:
        for kind in args.kinds:
            with tempfile.TemporaryDirectory(prefix="sg4v-scale-") as work:
                extra = [] if args.window_rows is None else ["--window-rows", str(args.window_rows)]
                proc = subprocess.run([sys.executable, __file__, *extra, "--child", kind, str(clips), work],
                                      capture_output=True, text=True, cwd=REPO,
                                      env={**os.environ, "PYTHONPATH": str(REPO)})
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    continue
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = results[-1]
                print(f"{r['kind']:9s} {r['clips']:>9,d} clips: listing {r['listing_s']:7.1f}s "
                      f"(driver CPU {r['listing_driver_cpu_s']:.1f}s), run {r['run_s']:7.1f}s = "
                      f"{r['rows_per_s']:8.1f} rows/s, {r['rows_per_cpu_s']:7.1f} rows/CPU-s (machine; {r['rows_per_tree_cpu_s']:.0f} by the process tree), "
                      f"resume {r['resume_s']:6.1f}s, driver peak RSS {r['driver_peak_rss_mib']:.0f} MiB "
                      f"(job {r['job_process_peak_rss_mib']:.0f}, window {r['window_process_peak_rss_mib']:.0f}), "
                      f"object store peak {r['object_store_peak_mib']:.0f} MiB", flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": cpu_name(), "note": "shared machine: other work was running", "results": results}, indent=2))


if __name__ == "__main__":
    main()
