"""The sharded dedup pool and its decision log: agreement, per-part cost, rebuild (run through
``bench/dedup.py --sections sharding,per_shard,rebuild``).

- sharding: decisions of ``ShardedPool`` (parts held in this process, exact search in each, so
  only the sharding differs) against the single exact greedy pool, on the stream of
  ``bench/dedup.py`` against the same pool, for 4 and 16 parts probing 1, 2, 3, without a
  probe margin and with the default one (parts searched per query reported); and a full
  greedy run from an empty pool (cascades included). 1 part is the reference itself.
- per_shard: one part (``ShardPool``) with the per-part index (IVF, nlist ~ sqrt(n), SQ8,
  nprobe as default) at the pool size: queries per CPU-second of ``nearest()`` (search + exact
  rescore), and by arithmetic the parts needed for a 50M pool at 2,000 decisions/s.
- rebuild: a decision log of N kept vectors written with ``DecisionLog`` (batch files merged at
  ``dedup.log_file_rows`` as a run merges them), then
  ``SemanticDedup.setup()`` in a fresh process: wall and CPU seconds, peak RSS.

CPU figures are ``time.process_time`` (all threads of this process), so other work on the
machine changes them little; wall figures are given beside them.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from operators.dedup import DedupConfig, GreedyDedupIndex  # noqa: E402
from operators.dedup.decision_log import DecisionLog  # noqa: E402
from operators.dedup.shard import ShardPool  # noqa: E402
from operators.dedup.sharded import LocalShard, ShardedPool  # noqa: E402

BATCH = 256
TRAIN_SIZE = 50_000


class CachedPool:
    """The bench data with its pool generated once and kept (3 GiB at 1M x 768): the sharded
    configurations are each filled from it instead of regenerating it."""

    def __init__(self, data: Any, size: int) -> None:
        self.data, self.dim, self.size = data, data.dim, size
        self.chunks = list(data.pool(size))

    def pool(self, n: int):
        if n != self.size:
            raise ValueError(f"cached pool holds {self.size} vectors, not {n}")
        yield from self.chunks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)


def sharded_index(config: DedupConfig, data: Any, pool: int) -> GreedyDedupIndex:
    """A ``GreedyDedupIndex`` over ``config.shards`` local parts, filled with the bench pool."""
    parts = [LocalShard(config, data.dim) for _ in range(config.shards)]
    index = GreedyDedupIndex(config, data.dim, pool=ShardedPool(config, data.dim, parts))
    for first, vectors in data.pool(pool):
        index.pool.add([f"p{i}" for i in range(first, first + len(vectors))],
                       np.arange(first, first + len(vectors)), vectors)
    index.next_rank = pool
    return index


def _timed(fn, *args) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _variants(part_counts: tuple[int, ...]):
    """(parts, probe_shards, probe_margin): each probe count without a margin and with the
    default one."""
    for shards in part_counts:
        for margin in (0.0, DedupConfig().probe_margin):
            for probe in (1, 2, 3):
                yield shards, probe, margin


def sharded_agreement(data: Any, pool: int, queries: int, measure, build_pool, own_duplicates,
                      quick: bool = False, part_counts: tuple[int, ...] = (4, 16)) -> dict[str, Any]:
    stream = data.stream(queries, pool)
    data = CachedPool(data, pool)
    reference = build_pool(DedupConfig(mode="exact", use_gpu=False), data, pool)
    ref, ref_wall, ref_cpu = _timed(measure, reference, stream)
    del reference
    gc.collect()
    rows = []
    for shards, probe, margin in _variants(part_counts):
        config = DedupConfig(mode="exact", use_gpu=False, shards=shards, probe_shards=probe,
                             probe_margin=margin, train_size=TRAIN_SIZE)
        index = sharded_index(config, data, pool)
        got, wall, cpu = _timed(measure, index, stream)
        sizes = index.pool.sizes
        rows.append({"shards": shards, "probe": probe, "margin": margin, "queries": queries,
                     "agreement": float(np.mean(np.array(got["kept"]) == np.array(ref["kept"]))),
                     "parts_searched": index.pool.probes_per_query, "spread_dim": index.pool.spread_dim,
                     "kept": got["kept_fraction"], "cpu_s": cpu, "wall_s": wall,
                     "part_min": int(sizes.min()), "part_max": int(sizes.max())})
        print(f"sharding: {rows[-1]}", flush=True)
        del index
        gc.collect()
    full = full_run(data.data, own_duplicates, 15_000 if quick else 20_000, measure, part_counts)
    return {"pool": pool, "reference": {"kept": ref["kept_fraction"], "cpu_s": ref_cpu, "wall_s": ref_wall},
            "against_pool": rows, "full_run": full}


def full_run(data: Any, own_duplicates, n: int, measure,
             part_counts: tuple[int, ...] = (4, 16)) -> dict[str, Any]:
    """From an empty pool: the parts are trained on the first n/5 kept, then take over."""
    stream = own_duplicates(data, n)
    ref = measure(GreedyDedupIndex(DedupConfig(use_gpu=False), data.dim), stream)
    rows = []
    for shards, probe, margin in _variants(part_counts):
        config = DedupConfig(use_gpu=False, shards=shards, probe_shards=probe, probe_margin=margin,
                             train_size=n // 5)
        parts = [LocalShard(config, data.dim) for _ in range(shards)]
        index = GreedyDedupIndex(config, data.dim, pool=ShardedPool(config, data.dim, parts))
        got = measure(index, stream)
        rows.append({"shards": shards, "probe": probe, "margin": margin,
                     "parts_searched": index.pool.probes_per_query,
                     "agreement": float(np.mean(np.array(got["kept"]) == np.array(ref["kept"])))})
    return {"vectors": n, "train_size": n // 5, "kept_exact": ref["kept_fraction"], "rows": rows}


#: The per-part index variants ``per_shard`` measures: (encoding, rescore_k).
PER_SHARD_VARIANTS = {"sq8": ("sq8", 4), "pq": ("pq", 16), "pq4": ("pq4", 16)}


def exact_best(data: Any, pool: int, stream: np.ndarray) -> np.ndarray:
    """Each query's exact best similarity over the whole pool (brute force, chunk by chunk)."""
    import faiss

    best = np.full(len(stream), -np.inf)
    for _, vectors in data.pool(pool):
        sims, _ = faiss.knn(stream, vectors, 1, metric=faiss.METRIC_INNER_PRODUCT)
        best = np.maximum(best, sims[:, 0])
    return best


def per_shard_cost(data: Any, pool: int, queries: int, rate: float = 2000.0,
                   target_pool: int = 50_000_000, probe: int = 2,
                   variants: tuple[str, ...] = ("sq8", "pq", "pq4"), threshold: float = 0.95) -> dict[str, Any]:
    """One part at ``pool`` vectors per index variant: queries per CPU-second through
    ``nearest()`` and the share of keep/drop decisions (at ``threshold``) that agree with
    exact search over the same pool."""
    stream = data.stream(queries, pool)
    wall = time.perf_counter()
    reference = exact_best(data, pool, stream)
    print(f"per part: exact reference over {pool} vectors in {time.perf_counter() - wall:.0f} s", flush=True)
    results = {}
    for name in variants:
        encoding, rescore_k = PER_SHARD_VARIANTS[name]
        config = DedupConfig(mode="approximate", approximate_kind="ivf", ivf_nlist="sqrt", use_gpu=False,
                             ivf_encoding=encoding, rescore_k=rescore_k)
        part = ShardPool(config, data.dim)
        wall, cpu = time.perf_counter(), time.process_time()
        for first, vectors in data.pool(pool):
            part.add([f"p{i}" for i in range(first, first + len(vectors))],
                     np.arange(first, first + len(vectors)), vectors)
        part.search.sync()  # trains the IVF and adds the vectors
        build = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        best = []
        wall, cpu = time.perf_counter(), time.process_time()
        for s in range(0, len(stream), BATCH):
            best.append(part.nearest(stream[s : s + BATCH])[0])
        cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
        best_sims = np.concatenate(best)
        ann = part.search.ann
        q1 = queries / cpu_s
        code = {"pq": f"PQ{ann.pq.M}", "pq4": f"PQ{ann.pq.M}x4fs"}.get(encoding, encoding.upper())
        results[name] = {
            "pool": pool, "index": f"IVF{ann.nlist},{code} nprobe={ann.nprobe} rescore_k={rescore_k}",
            "queries": queries, "queries_per_cpu_s": q1, "queries_per_wall_s": queries / wall_s,
            "decision_agreement": float(np.mean((best_sims >= threshold) == (reference >= threshold))),
            "similarity_exact": float(np.mean(np.abs(best_sims - reference) < 1e-6)),
            "build": build, "plan": plan(q1, pool, rate, target_pool, probe)}
        print(f"per part {name}: {results[name]}", flush=True)
        del part
        gc.collect()
    return results


def plan(q1: float, measured_pool: int, rate: float, target_pool: int, probe: int) -> dict[str, Any]:
    """Parts needed so that each part's share of the searches (rate x probe / N a second) fits
    one CPU, with the part's speed scaled from the measured one as sqrt(pool): IVF with nlist
    ~ sqrt(n) and a fixed nprobe scans ~ sqrt(n) vectors a query and ranks sqrt(n) centroids."""
    for n_parts in range(1, 100_000):
        per_part = target_pool / n_parts
        speed = q1 * (measured_pool / per_part) ** 0.5
        if rate * probe / n_parts <= speed:
            return {"parts": n_parts, "vectors_per_part": int(per_part), "rate": rate, "probe": probe,
                    "part_queries_per_cpu_s": speed, "part_load": rate * probe / n_parts}
    return {"parts": None}


REBUILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from operators.dedup import DedupConfig, SemanticDedup

def hwm():  # peak RSS of this process image (ru_maxrss would carry the parent's over fork+exec)
    line = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    return int(line.split()[1]) / 2**20

base = hwm()
op = SemanticDedup(DedupConfig(use_gpu=False), output={out!r})
wall, cpu = time.perf_counter(), time.process_time()
op.setup()
print(json.dumps({{"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                  "peak_rss_gib": hwm(),
                  "rss_before_gib": base, "pool": len(op.index), "next_rank": op.index.next_rank}}))
"""


def rebuild_from_log(data: Any, kept: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sg4v-dedup-log-") as out:
        log = DecisionLog(out, file_rows=DedupConfig().log_file_rows)  # merged as a run merges it
        wall = time.perf_counter()
        for first, vectors in data.pool(kept):
            for s in range(0, len(vectors), BATCH):
                part = vectors[s : s + BATCH]
                start = first + s
                log.append([f"p{i}" for i in range(start, start + len(part))], range(start, start + len(part)),
                           [True] * len(part), [None] * len(part), [None] * len(part), part)
        write_s = time.perf_counter() - wall
        logged = list(Path(out, "dedup_log").iterdir())
        size = sum(p.stat().st_size for p in logged)
        run = subprocess.run([sys.executable, "-c", REBUILD.format(root=str(ROOT), out=out)],
                             capture_output=True, text=True, check=True)
    result = {"kept": kept, "batches": -(-kept // BATCH), "files": len(logged), "log_gib": size / 2**30, "write_s": write_s,
              **json.loads(run.stdout.strip().splitlines()[-1])}
    print(f"rebuild: {result}", flush=True)
    return result
