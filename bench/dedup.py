"""Throughput and agreement of the incremental semantic dedup (``GreedyDedupIndex``).

    python bench/dedup.py            # exact @ 100k pool, approximate (IVF-SQ8) @ 1M pool, 768-d
    python bench/dedup.py --quick    # the same at 20k / 100k, for a smoke check
    python bench/dedup.py --gpu      # adds exact mode on GPU 0 @ 1M pool (needs faiss with a GPU)
    python bench/dedup.py --sections sharding,per_shard,rebuild   # the sharded pool and its log

Data: 768-d unit vectors around 2,000 random cluster centres. The pool holds fresh points
(distinct videos); the query stream mixes near-duplicates of pool members and of earlier
stream items (cosine about 0.86-0.999, so on both sides of the threshold) with fresh points,
so most queries are kept and the pool grows while it is measured.

For each scenario, batch by batch, the raw faiss search of the same index type at the same
pool size (k=1, same batch) is timed right before the dedup's ``decide()`` on that batch
(search + exact rescore + in-batch resolution + adds), so both see the same load. The ratio
decide/raw is the share of the index's own speed the dedup keeps. Approximate vs exact:
decisions on the same stream against the same 1M pool, and the ratio of their speeds; plus a
full greedy run from an empty pool on 40k vectors (cascading effects included).
Prints a markdown table and writes bench/results/dedup.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from dedup_sharded import per_shard_cost, rebuild_from_log, sharded_agreement  # noqa: E402

from operators.dedup import DedupConfig, GreedyDedupIndex  # noqa: E402

DIM = 768
BATCH = 256
CLUSTERS = 2000
CHUNK = 50_000


class ClusteredData:
    """Deterministic clustered unit vectors: chunk i of the pool is the same on every call."""

    def __init__(self, seed: int = 0, dim: int = DIM) -> None:
        rng = np.random.default_rng(seed)
        self.seed, self.dim = seed, dim
        self.centres = _unit(rng.standard_normal((CLUSTERS, dim)))
        self.spread = rng.uniform(0.5, 1.0, size=CLUSTERS)

    def fresh(self, n: int, rng: np.random.Generator) -> np.ndarray:
        which = rng.integers(0, CLUSTERS, size=n)
        noise = rng.standard_normal((n, self.dim)) / np.sqrt(self.dim)
        return _unit(self.centres[which] + self.spread[which, None] * noise)

    def pool(self, n: int):
        """The pool in chunks: (first position, vectors)."""
        for first in range(0, n, CHUNK):
            rng = np.random.default_rng([self.seed, 1, first])
            yield first, self.fresh(min(CHUNK, n - first), rng)

    def stream(self, n: int, pool_size: int) -> np.ndarray:
        """40% near-duplicates of pool members, 10% of earlier stream items, 50% fresh."""
        rng = np.random.default_rng([self.seed, 2])
        out = self.fresh(n, rng)
        kinds = rng.random(n)
        noise = rng.uniform(0.05, 0.6, size=n)
        of_pool = np.flatnonzero(kinds < 0.4)
        positions = rng.integers(0, pool_size, size=len(of_pool))
        sources = np.empty((len(of_pool), self.dim), dtype=np.float32)
        for first, chunk in self.pool(pool_size):  # each pool chunk generated once
            sel = (positions >= first) & (positions < first + len(chunk))
            sources[sel] = chunk[positions[sel] - first]
        out[of_pool] = self.near(sources, noise[of_pool], rng)
        for i in np.flatnonzero((kinds >= 0.4) & (kinds < 0.5)):
            if i > 0:
                source = out[i - 1 - int(rng.integers(0, min(i, 600)))]
                out[i] = self.near(source[None], noise[i : i + 1], rng)[0]
        return out

    def near(self, sources: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Cosine to the source about 1/sqrt(1+e^2): 0.86 at e=0.6, 0.999 at e=0.05."""
        noise = rng.standard_normal(sources.shape) / np.sqrt(self.dim)
        return _unit(sources + e[:, None] * noise)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _ids(first: int, n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(first, first + n)]


def build_pool(config: DedupConfig, data: ClusteredData, size: int, raw_flat: Any = None) -> GreedyDedupIndex:
    index = GreedyDedupIndex(config, data.dim)
    for first, vectors in data.pool(size):
        index.add_kept(_ids(first, len(vectors), "p"), vectors)
        if raw_flat is not None:
            raw_flat.add(vectors)
    return index


def measure(
    index: GreedyDedupIndex, stream: np.ndarray, raw: Any = None, mirror_adds: bool = False
) -> dict[str, Any]:
    """Decide ``stream`` batch by batch; time ``raw.search(batch, 1)`` right before each.

    ``mirror_adds``: ``raw`` is a separate index, given the kept vectors too so both stay the
    same size (otherwise it is the dedup's own index, which it grows itself)."""
    raw_s = decide_s = 0.0
    kept: list[bool] = []
    for s in range(0, len(stream), BATCH):
        batch = stream[s : s + BATCH]
        if raw is not None:
            t = time.perf_counter()
            raw.search(batch, 1)
            raw_s += time.perf_counter() - t
        t = time.perf_counter()
        decisions = index.decide(_ids(s, len(batch), "q"), batch)
        decide_s += time.perf_counter() - t
        kept.extend(d.kept for d in decisions)
        if mirror_adds:
            raw.add(batch[[d.kept for d in decisions]])
    n = len(stream)
    out = {
        "queries": n,
        "decide_vps": n / decide_s,
        "kept_fraction": float(np.mean(kept)),
        "pool_after": len(index),
        "kept": kept,
    }
    if raw is not None:
        out["raw_qps"] = n / raw_s
        out["ratio"] = out["decide_vps"] / out["raw_qps"]
    return out


def exact_scenario(data: ClusteredData, pool: int, queries: int, gpu: bool) -> dict[str, Any]:
    import faiss

    config = DedupConfig(mode="exact", use_gpu=gpu)
    if gpu:
        index = build_pool(config, data, pool)
        index.search.sync()
        raw = index.search._gpu_flat  # the dedup's own GPU flat index
    else:
        raw = faiss.IndexFlatIP(data.dim)
        index = build_pool(config, data, pool, raw_flat=raw)
    result = measure(index, data.stream(queries, pool), raw, mirror_adds=not gpu)
    result.update(mode="exact", device="gpu" if gpu else "cpu", index="flat IP", pool=pool)
    return result


def approximate_scenario(data: ClusteredData, pool: int, queries: int) -> dict[str, Any]:
    config = DedupConfig(mode="approximate", approximate_kind="ivf", use_gpu=False)
    index = build_pool(config, data, pool)
    t = time.perf_counter()
    index.search.sync()  # trains the IVF on the stored vectors and adds them
    build_s = time.perf_counter() - t
    ann = index.search.ann
    result = measure(index, data.stream(queries, pool), ann)
    result.update(
        mode="approximate",
        device="cpu",
        index=f"IVF{ann.nlist},{config.ivf_encoding.upper()} nprobe={ann.nprobe} rescore_k={config.candidates}",
        pool=pool,
        build_s=build_s,
    )
    return result


def exact_on_same_stream(data: ClusteredData, pool: int, queries: int) -> dict[str, Any]:
    index = build_pool(DedupConfig(mode="exact", use_gpu=False), data, pool)
    result = measure(index, data.stream(queries, pool))
    result.update(mode="exact", device="cpu", index="flat IP", pool=pool)
    return result


def full_greedy_agreement(data: ClusteredData, n: int, min_pool: int) -> dict[str, Any]:
    """Both modes from an empty pool over the same stream: the real greedy run, with cascades."""
    stream = stream_with_own_duplicates(data, n)
    exact = measure(GreedyDedupIndex(DedupConfig(use_gpu=False), data.dim), stream)
    config = DedupConfig(mode="approximate", approximate_min_pool=min_pool, use_gpu=False)
    approx = measure(GreedyDedupIndex(config, data.dim), stream)
    agree = float(np.mean(np.array(exact["kept"]) == np.array(approx["kept"])))
    return {
        "vectors": n,
        "approximate_min_pool": min_pool,
        "agreement": agree,
        "kept_exact": float(np.mean(exact["kept"])),
        "kept_approximate": float(np.mean(approx["kept"])),
        "exact_vps": exact["decide_vps"],
        "approximate_vps": approx["decide_vps"],
    }


def stream_with_own_duplicates(data: ClusteredData, n: int) -> np.ndarray:
    """Fresh clustered points with 35% near-duplicates of earlier ones, near or far back."""
    rng = np.random.default_rng([data.seed, 4])
    out = data.fresh(n, rng)
    dups = np.flatnonzero(rng.random(n) < 0.35)
    for i in dups[dups > 0]:
        back = 1 + int(rng.integers(0, min(i, 300))) if rng.random() < 0.5 else 1 + int(rng.integers(0, i))
        out[i] = data.near(out[i - back][None], rng.uniform(0.05, 0.6, size=1), rng)[0]
    return out


def machine() -> dict[str, Any]:
    import faiss

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "gpus": faiss.get_num_gpus(),
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "| scenario | pool | index | raw faiss search (q/s) | dedup decide (vectors/s) | decide/raw | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        rows.append(
            f"| {r['mode']} ({r['device']}) | {r['pool']:,} | {r['index']} | {r['raw_qps']:,.0f} | "
            f"{r['decide_vps']:,.0f} | {r['ratio']:.2f} | >= 0.8 |"
        )
    c = results["approximate_vs_exact"]
    rows += [
        "",
        "| approximate vs exact | value | target |",
        "|---|---|---|",
        f"| speed at a {c['pool']:,} pool (approximate / exact decide) | {c['speedup']:.1f}x "
        f"({c['approximate_vps']:,.0f} vs {c['exact_vps']:,.0f} vectors/s) | >= 5x |",
        f"| agreement on {c['queries']:,} queries against the same {c['pool']:,} pool | "
        f"{100 * c['agreement']:.2f}% | >= 99% |",
    ]
    f = results["full_run_agreement"]
    rows.append(
        f"| agreement, full greedy run from an empty pool ({f['vectors']:,} vectors, IVF from "
        f"{f['approximate_min_pool']:,}) | {100 * f['agreement']:.2f}% (kept {100 * f['kept_exact']:.1f}% "
        f"exact, {100 * f['kept_approximate']:.1f}% approximate) | >= 99% |"
    )
    return "\n".join(rows)


SECTIONS = ("throughput", "sharding", "per_shard", "rebuild")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small pools, for a smoke check")
    parser.add_argument("--gpu", action="store_true", help="also exact mode on GPU 0 at the large pool")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--pool", type=int, default=None, help="pool size of the sharding, per_shard "
                        "and rebuild sections (default 1M, --quick 100k)")
    parser.add_argument("--sharding-queries", type=int, default=None,
                        help="queries of the sharding section (default as the others: 4096, --quick 2048)")
    parser.add_argument("--sharding-parts", default="4,16",
                        help="sharding: part counts to compare with the single exact greedy")
    parser.add_argument("--per-shard-variants", default="sq8,pq,pq4",
                        help="per_shard: per-part IVF encodings to measure (sq8, pq, pq4)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dedup.json"))
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")

    big = args.pool or (100_000 if args.quick else 1_000_000)
    queries = 2048 if args.quick else 4096
    data = ClusteredData()
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "batch_size": BATCH, "dim": DIM}
    if "throughput" in sections:
        results.update(throughput_sections(data, args.quick, args.gpu, queries))
        print(table(results))
    if "sharding" in sections:
        results["sharding"] = sharded_agreement(data, big, args.sharding_queries or queries, measure, build_pool,
                                                stream_with_own_duplicates, quick=args.quick,
                                                part_counts=tuple(int(p) for p in args.sharding_parts.split(",")))
    if "per_shard" in sections:
        results["per_shard"] = per_shard_cost(data, big, queries,
                                              variants=tuple(args.per_shard_variants.split(",")))
    if "rebuild" in sections:
        results["rebuild"] = rebuild_from_log(data, big)
    results["wall_s"] = time.perf_counter() - started
    print(f"\nwall time {results['wall_s']:.0f} s; machine {results['machine']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def throughput_sections(data: ClusteredData, quick: bool, gpu: bool, queries: int) -> dict[str, Any]:
    exact_pool, approx_pool = (20_000, 100_000) if quick else (100_000, 1_000_000)
    full_n, full_min_pool = (15_000, 3_000) if quick else (40_000, 8_000)
    results: dict[str, Any] = {}
    throughput = [exact_scenario(data, exact_pool, queries, gpu=False)]
    gc.collect()
    approx = approximate_scenario(data, approx_pool, queries)
    throughput.append(approx)
    gc.collect()
    exact_big = exact_on_same_stream(data, approx_pool, queries)
    gc.collect()
    if gpu:
        throughput.append(exact_scenario(data, approx_pool, queries * 4, gpu=True))
        gc.collect()
    results["approximate_vs_exact"] = {
        "pool": approx_pool,
        "queries": queries,
        "approximate_vps": approx["decide_vps"],
        "exact_vps": exact_big["decide_vps"],
        "speedup": approx["decide_vps"] / exact_big["decide_vps"],
        "agreement": float(np.mean(np.array(approx["kept"]) == np.array(exact_big["kept"]))),
        "kept_exact": exact_big["kept_fraction"],
        "kept_approximate": approx["kept_fraction"],
    }
    results["full_run_agreement"] = full_greedy_agreement(data, full_n, full_min_pool)
    for r in throughput:
        r.pop("kept")
    results["throughput"] = throughput
    return results


if __name__ == "__main__":
    main()
