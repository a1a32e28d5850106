"""The pool split into parts by coarse centroid: probing, boundaries, surviving and lost parts."""

import numpy as np
import pytest

from operators.base import apply_to_live_rows, object_column
from operators.dedup import DedupConfig, GreedyDedupIndex, SemanticDedup
from operators.dedup.memory import decider_memory_bytes, log_merge_bytes, shard_memory_bytes
from operators.dedup.sharded import LocalShard, ShardedPool, ShardLost

from .synthetic import clustered, decide_in_batches, greedy_reference, plant_near_duplicates, unit

THRESHOLD = 0.9
D = 32


def config(**kw) -> DedupConfig:
    return DedupConfig(threshold=THRESHOLD, use_gpu=False, **kw)


def sharded_index(shards: int, probe: int, train_size: int = 200, backends=None,
                  margin: float = 0.0) -> GreedyDedupIndex:
    cfg = config(shards=shards, probe_shards=probe, train_size=train_size, probe_margin=margin)
    backends = backends or [LocalShard(cfg, D) for _ in range(shards)]
    return GreedyDedupIndex(cfg, D, pool=ShardedPool(cfg, D, backends))


def data(n=2000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return plant_near_duplicates(clustered(n, D, 30, rng, spread=(0.4, 0.9)), 0.3, rng)


@pytest.mark.parametrize("shards", [2, 4, 8])
def test_probing_every_part_is_the_exact_greedy_rule(shards):
    x = data()
    kept, nearest, best = greedy_reference(x, THRESHOLD)
    decisions = decide_in_batches(sharded_index(shards, shards), x, 64)
    assert [d.kept for d in decisions] == kept.tolist()
    assert [d.nearest_id for d in decisions] == [f"v{i}" if i >= 0 else None for i in nearest]
    sims = np.array([np.nan if d.similarity is None else d.similarity for d in decisions])
    np.testing.assert_allclose(sims, best, atol=1e-9)


@pytest.mark.parametrize("shards", [2, 4, 8])
def test_a_full_margin_is_the_exact_greedy_rule_with_one_probe(shards):
    x = data()
    kept, nearest, _ = greedy_reference(x, THRESHOLD)
    index = sharded_index(shards, 1, margin=float(np.sqrt(D)))  # the worst-case bound
    decisions = decide_in_batches(index, x, 64)
    assert [d.kept for d in decisions] == kept.tolist()
    assert [d.nearest_id for d in decisions] == [f"v{i}" if i >= 0 else None for i in nearest]
    assert 1.0 <= index.pool.probes_per_query <= shards


def test_planted_duplicates_across_a_part_boundary_are_caught_with_two_probes_or_the_margin():
    x = data(1500, seed=1)
    probe1 = sharded_index(4, 1)
    decide_in_batches(probe1, x, 100)  # trains the parts on the first 200 kept
    centroids = probe1.pool.centroids
    # Pairs straddling the boundary of parts 0 and 1 (the plane where both centroids score the
    # same): spread along that plane, nudged to either side; each pair's cosine is ~0.95.
    rng = np.random.default_rng(2)
    mid = unit(centroids[0] + centroids[1])
    axis = unit(centroids[0] - centroids[1])
    pairs = []
    while len(pairs) < 20:
        r = rng.standard_normal(D)
        base = unit(mid + 0.8 * unit(r - (r @ axis) * axis))
        left, right = unit(base + 0.16 * axis), unit(base - 0.16 * axis)
        homes = probe1.pool.home(np.stack([left, right]))
        if tuple(homes) == (0, 1):
            pairs.append((left, right))
    left = np.stack([p[0] for p in pairs])
    right = np.stack([p[1] for p in pairs])
    assert np.all(np.sum(left * right, axis=1) >= THRESHOLD)

    def dropped(index) -> int:
        """Of the pairs whose left member is kept, how many right members are dropped for it."""
        caught = 0
        for i in range(len(pairs)):
            if index.decide([f"l{i}"], left[i : i + 1])[0].kept:
                d = index.decide([f"r{i}"], right[i : i + 1])[0]
                caught += not d.kept and d.nearest_id == f"l{i}"
            else:
                caught += 1  # left is itself a duplicate of the pool: not a boundary case
        return caught

    assert dropped(probe1) < len(pairs)  # one probe misses duplicates across the boundary
    probe2 = sharded_index(4, 2)
    decide_in_batches(probe2, x, 100)
    np.testing.assert_array_equal(probe2.pool.centroids, centroids)  # same data, same parts
    assert dropped(probe2) == len(pairs)
    # One probe and a margin: the pairs' offsets are aimed straight across the boundary (the
    # worst case), 0.16 of the 0.45 a near-duplicate can reach, so a margin of 0.36 x the bound
    # (z = 0.36 sqrt(d_eff)) is needed; the default z = 1 is for offsets that are not aimed.
    margin = sharded_index(4, 1, margin=0.4 * np.sqrt(probe1.pool.spread_dim))
    decide_in_batches(margin, x, 100)
    assert dropped(margin) == len(pairs)
    assert margin.pool.probes_per_query < 4


def test_the_default_margin_misses_fewer_duplicates_than_a_second_probe_with_fewer_searches():
    x = data(4000, seed=0)
    kept, _, _ = greedy_reference(x, THRESHOLD)

    def disagreements(probe: int, margin: float) -> tuple[int, float]:
        index = sharded_index(8, probe, margin=margin)
        decisions = decide_in_batches(index, x, 64)
        return int(np.sum(np.array([d.kept for d in decisions]) != kept)), index.pool.probes_per_query

    one, _ = disagreements(1, 0.0)
    two, _ = disagreements(2, 0.0)
    with_margin, searched = disagreements(1, DedupConfig().probe_margin)
    assert with_margin < two < one
    assert 1.0 < searched < 2.0


def make_op(tmp_path, backends, **kw):
    op = SemanticDedup(config(shards=4, probe_shards=4, train_size=150, **kw), output=str(tmp_path),
                       shards=backends)
    op.setup()
    return op


def feed(op, x, start, stop, batch=50):
    out = []
    for s in range(start, stop, batch):
        ids = [f"v{i}" for i in range(s, min(s + batch, stop))]
        rows = {"video_id": object_column(ids),
                "text_embedding": object_column([list(map(float, v)) for v in x[s : s + batch]])}
        res = apply_to_live_rows(op, rows)
        out += list(zip(ids, res["dedup_rank"], res.get("reject_reason", [None] * len(ids)), strict=True))
    return out


def test_parts_that_outlive_the_decider_are_topped_up_not_refilled(tmp_path):
    x = data(1200, seed=4)
    calm = feed(make_op(tmp_path / "calm", None), x, 0, len(x))
    cfg = config(shards=4, probe_shards=4, train_size=150)
    parts = [LocalShard(cfg, D) for _ in range(4)]
    first = make_op(tmp_path / "out", parts)
    got = feed(first, x, 0, 600)
    sizes = [len(p.pool) for p in parts]
    # The decider dies; the parts survive. Its replacement rebuilds from the log and adds
    # nothing to parts that already hold their vectors.
    second = make_op(tmp_path / "out", parts)
    assert [len(p.pool) for p in parts] == sizes
    got += feed(second, x, 600, len(x))
    assert got == calm


def test_a_part_that_lost_its_vectors_is_refilled_from_the_log(tmp_path):
    x = data(1200, seed=6)
    calm = feed(make_op(tmp_path / "calm", None), x, 0, len(x))
    cfg = config(shards=4, probe_shards=4, train_size=150)
    parts = [LocalShard(cfg, D) for _ in range(4)]
    op = make_op(tmp_path / "out", parts)
    got = feed(op, x, 0, 600)
    lost = parts[2].pool
    parts[2].pool = type(lost)(cfg, D)  # its worker restarted empty
    with pytest.raises(ShardLost):
        op.index.pool.nearest(x[:5])
    got += feed(op, x, 600, len(x))
    assert len(parts[2].pool) >= len(lost)
    assert got == calm


def test_declared_memory_follows_the_pool_size():
    small, big = config(pool_size=100_000), config(pool_size=1_000_000)
    fixed = 2**29 + log_merge_bytes(big)  # the process and one log merge, whatever the pool

    def grows(cfg) -> int:
        return decider_memory_bytes(cfg) - fixed

    assert grows(big) > 9 * grows(small)
    # 768-d exact: about 3.7 KB a vector, as measured in bench/dedup.py (3.2-3.4 KB) plus margin.
    assert 3.3e9 < grows(big) < 4.5e9
    sharded = config(pool_size=1_000_000, shards=8, train_size=50_000)
    assert grows(sharded) < grows(big) / 5
    # Each of 8 parts is sized at 1.5 / 8 of the pool (k-means parts are uneven).
    assert shard_memory_bytes(sharded) - 2**29 < 0.2 * grows(big)
    # A merge of 50,000 768-d decisions is declared; without merging it is not.
    assert 4e8 < log_merge_bytes(big) < 6e8
    assert decider_memory_bytes(big) - decider_memory_bytes(config(pool_size=1_000_000, log_file_rows=0)) \
        == log_merge_bytes(big)
