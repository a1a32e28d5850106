import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from operators.dedup import DedupConfig, GreedyDedupIndex

from .synthetic import (
    clustered,
    decide_in_batches,
    greedy_reference,
    plant_near_duplicates,
    random_unit,
    unit,
)

THRESHOLD = 0.9


def exact_config(**kw) -> DedupConfig:
    return DedupConfig(threshold=kw.pop("threshold", THRESHOLD), use_gpu=False, **kw)


def dataset(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random768":
        x = random_unit(800, 768, rng)
    elif kind == "clustered768":
        x = clustered(800, 768, 20, rng, spread=(0.2, 0.6))
    else:  # small dimension: many natural neighbours above the threshold
        x = random_unit(600, 8, rng)
    return plant_near_duplicates(x, 0.3, rng)


def assert_matches_reference(decisions, x, threshold):
    kept, nearest, best = greedy_reference(x, threshold)
    assert [d.kept for d in decisions] == kept.tolist()
    assert [d.rank for d in decisions] == list(range(len(x)))
    assert [d.nearest_id for d in decisions] == [f"v{i}" if i >= 0 else None for i in nearest]
    sims = np.array([np.nan if d.similarity is None else d.similarity for d in decisions])
    np.testing.assert_allclose(sims, best, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["random768", "clustered768", "small_d"])
@pytest.mark.parametrize("batch_size", [1, 7, 256, 5000])
def test_exact_mode_equals_brute_force_greedy(kind, batch_size):
    x = dataset(kind)
    kept, _, _ = greedy_reference(x, THRESHOLD)
    assert 0.05 < 1 - kept.mean() < 0.95  # the data really exercises both outcomes
    index = GreedyDedupIndex(exact_config(), x.shape[1])
    assert_matches_reference(decide_in_batches(index, x, batch_size), x, THRESHOLD)
    assert len(index) == kept.sum()


def test_duplicates_inside_one_batch_are_resolved_in_order():
    rng = np.random.default_rng(1)
    a, b = random_unit(2, 32, rng)
    near_a = unit(a + 0.05 * rng.standard_normal(32) / np.sqrt(32))
    index = GreedyDedupIndex(exact_config(), 32)
    decisions = index.decide(["a", "a2", "b", "a3", "b2"], np.stack([a, near_a, b, a, b]))
    assert [d.kept for d in decisions] == [True, False, True, False, False]
    assert [d.nearest_id for d in decisions] == [None, "a", "a", "a", "b"]
    assert decisions[3].similarity == pytest.approx(1.0)
    assert decisions[0].similarity is None and decisions[2].similarity < THRESHOLD
    # The next batch sees the kept members of the previous one.
    assert not index.decide(["a4"], a[None])[0].kept


@st.composite
def greedy_problems(draw):
    d = draw(st.integers(2, 6))
    n_base = draw(st.integers(1, 8))
    coords = st.floats(-1, 1, allow_nan=False, width=32)
    base = np.array(
        draw(st.lists(st.lists(coords, min_size=d, max_size=d), min_size=n_base, max_size=n_base))
    )
    assume(np.all(np.linalg.norm(base, axis=1) > 1e-2))
    # Rows are bases, repeated and jittered, so exact and near duplicates are common.
    picks = draw(st.lists(st.integers(0, n_base - 1), min_size=1, max_size=30))
    jitter = draw(
        st.lists(st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5]), min_size=len(picks), max_size=len(picks))
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = unit(base[picks] + np.array(jitter)[:, None] * rng.standard_normal((len(picks), d)))
    threshold = draw(st.floats(0.05, 0.999))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(x) - 1)), max_size=6)))
    return x, threshold, cuts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(greedy_problems())
def test_exact_mode_is_the_greedy_rule_for_any_batch_split(problem):
    x, threshold, cuts = problem
    _, _, best = greedy_reference(x, threshold)
    # The rule is defined up to float rounding: skip draws with a similarity at the threshold.
    assume(not np.any(np.abs(best[~np.isnan(best)] - threshold) < 1e-5))
    index = GreedyDedupIndex(exact_config(threshold=threshold), x.shape[1])
    decisions = []
    for start, stop in zip([0, *cuts], [*cuts, len(x)], strict=True):
        decisions.extend(index.decide([f"v{i}" for i in range(start, stop)], x[start:stop]))
    kept, _, _ = greedy_reference(x, threshold)
    assert [d.kept for d in decisions] == kept.tolist()
    assert [d.rank for d in decisions] == list(range(len(x)))


def approximate_config(kind: str) -> DedupConfig:
    """``ivf`` (the default encoding, pq4), ``ivf-sq8``, ``ivf-pq``, ``ivf-pq4`` (IVF with 8-bit
    scalar or 8- or 4-bit product-quantized lists; the default rescore_k for each, 4 or 16) or
    ``hnsw``."""
    pq = {"ivf_encoding": kind.split("-")[1], "ivf_pq_bytes": 16} if "-" in kind else {}
    return exact_config(
        mode="approximate",
        approximate_kind=kind.split("-")[0],
        **pq,
        approximate_min_pool=500,
        ivf_nlist=32,
        ivf_nprobe=4,
        ivf_retrain_growth=2.0,
        hnsw_m=16,
        hnsw_ef_construction=40,
        hnsw_ef_search=32,
    )


def clustered_with_duplicates(n=4000, d=64, seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return plant_near_duplicates(clustered(n, d, 60, rng, spread=(0.5, 1.0)), 0.3, rng)


@pytest.mark.parametrize("kind", ["ivf", "ivf-sq8", "ivf-pq", "ivf-pq4", "hnsw"])
def test_approximate_mode_agrees_with_exact(kind):
    x = clustered_with_duplicates()
    exact = decide_in_batches(GreedyDedupIndex(exact_config(), x.shape[1]), x, 256)
    index = GreedyDedupIndex(approximate_config(kind), x.shape[1])
    approx = decide_in_batches(index, x, 256)
    assert index.search.approximate_active
    expected = {"ivf": "IndexIVFPQFastScan", "ivf-sq8": "IndexIVFScalarQuantizer", "ivf-pq": "IndexIVFPQ",
                "ivf-pq4": "IndexIVFPQFastScan"}
    assert type(index.search.ann).__name__ == expected.get(kind, "IndexHNSWFlat")
    agreement = np.mean([a.kept == e.kept for a, e in zip(approx, exact, strict=True)])
    assert agreement >= 0.99
    # Candidates are rescored exactly: every drop rests on a true similarity >= threshold.
    assert all(a.similarity >= THRESHOLD for a in approx if not a.kept)


@pytest.mark.parametrize("mode", ["exact", "ivf", "ivf-pq", "ivf-pq4", "hnsw"])
def test_resume_from_kept_rows_decides_the_same(mode):
    config = exact_config() if mode == "exact" else approximate_config(mode)
    x = clustered_with_duplicates(n=2400, seed=5)
    one_pass = decide_in_batches(GreedyDedupIndex(config, x.shape[1]), x, 200)

    half = 1300  # not a multiple of the batch size
    first = GreedyDedupIndex(config, x.shape[1])
    before = decide_in_batches(first, x[:half], 200)
    kept_ids = [f"v{i}" for i, d in enumerate(before) if d.kept]
    kept_rows = [i for i, d in enumerate(before) if d.kept]
    resumed = GreedyDedupIndex(config, x.shape[1], start_rank=half)
    resumed.add_kept(kept_ids, x[kept_rows])
    after = decide_in_batches(resumed, x[half:], 200, offset=half)
    if mode != "ivf-pq4":
        assert before + after == one_pass
        return
    # Fast-scan search picks its kernel by the number of queries, so the candidates of a kept
    # video (its nearest, far below the threshold) may differ with the batching; what decides
    # must not: every keep/drop, every rank, and the exact nearest of every dropped video.
    def deciding(decisions):
        return [(d.kept, d.rank) if d.kept else d for d in decisions]

    assert deciding(before + after) == deciding(one_pass)


def test_default_ivf_is_fast_scan_pq_with_lists_growing_as_the_root_of_the_pool():
    config = DedupConfig(mode="approximate")
    assert (config.ivf_encoding, config.ivf_nlist, config.candidates) == ("pq4", "sqrt", 16)
    assert DedupConfig(mode="approximate", ivf_encoding="sq8").candidates == 4
    assert DedupConfig(mode="approximate", ivf_encoding="sq8", rescore_k=9).candidates == 9


def test_the_default_ivf_decides_the_same_whatever_the_batch_size():
    """Fast-scan search must not make a keep/drop decision depend on how many queries a batch
    holds."""
    config = approximate_config("ivf")
    x = clustered_with_duplicates(n=2000, seed=11)
    runs = [decide_in_batches(GreedyDedupIndex(config, x.shape[1]), x, size) for size in (1, 37, 256)]
    assert runs[0][-1].rank == len(x) - 1 and 0 < sum(d.kept for d in runs[0]) < len(x)
    assert [d.kept for d in runs[0]] == [d.kept for d in runs[1]] == [d.kept for d in runs[2]]
    # Which kept video is named nearest may differ where the index was (re)built at another
    # pool size (a batch boundary), as with every IVF encoding; a drop is always a true one.
    assert all(d.similarity >= THRESHOLD for run in runs for d in run if not d.kept)


@pytest.mark.parametrize("mode", ["exact", "ivf", "hnsw"])
def test_same_order_same_result(mode):
    config = exact_config() if mode == "exact" else approximate_config(mode)
    x = clustered_with_duplicates(n=2000, seed=7)
    runs = [decide_in_batches(GreedyDedupIndex(config, x.shape[1]), x, 128) for _ in range(2)]
    assert runs[0] == runs[1]


def test_rejects_bad_vectors():
    index = GreedyDedupIndex(exact_config(), 4)
    with pytest.raises(ValueError, match="normalized"):
        index.decide(["a"], np.array([[1.0, 1.0, 0.0, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="dimension"):
        index.decide(["a"], unit(np.ones((1, 3))))
    with pytest.raises(ValueError, match="normalized"):
        index.decide(["a"], np.array([[np.nan, 0, 0, 0]], dtype=np.float32))
    assert index.decide([], np.zeros((0, 4), dtype=np.float32)) == []


def test_config_is_validated():
    with pytest.raises(ValidationError, match="ivf_nprobe"):
        DedupConfig(ivf_nlist=8, ivf_nprobe=16)
    with pytest.raises(ValidationError):
        DedupConfig(treshold=0.9)
    with pytest.raises(ValidationError):
        DedupConfig(threshold=1.5)
    with pytest.raises(ValueError, match="GPU"):
        GreedyDedupIndex(DedupConfig(use_gpu=True), 4) if not _has_gpu() else pytest.skip("GPU present")


def _has_gpu() -> bool:
    import faiss

    return faiss.get_num_gpus() > 0
