"""The decision log: written before a batch is returned, rebuilt from on restart and rerun."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.base import apply_to_live_rows, object_column
from operators.dedup import DedupConfig, SemanticDedup
from operators.dedup.decision_log import LOG_FOLDER, DecisionLog

from .synthetic import clustered, greedy_reference, plant_near_duplicates, random_unit, unit

RNG = np.random.default_rng(5)
A, B, C = random_unit(3, 16, RNG)


def batch_of(ids, vectors):
    return {"video_id": object_column(list(ids)),
            "text_embedding": object_column([list(map(float, v)) for v in vectors])}


def fates(out):
    return [(r, reason) for r, reason in zip(out["dedup_rank"], out.get("reject_reason", [None] * len(out["dedup_rank"])),
                                             strict=True)]


def operator(out_dir, **config):
    op = SemanticDedup(DedupConfig(threshold=0.9, use_gpu=False, **config), output=str(out_dir))
    op.setup()
    return op


def test_each_batch_is_logged_before_it_is_returned(tmp_path):
    op = operator(tmp_path)
    apply_to_live_rows(op, batch_of(["a", "b", "a2"], [A, B, A]))
    files = sorted((tmp_path / LOG_FOLDER).glob("*.parquet"))
    assert [f.name for f in files] == ["000000000000-000000000002.parquet"]
    table = pq.read_table(files[0])
    assert table.column_names == ["video_id", "dedup_rank", "kept", "nearest_id", "similarity", "vector"]
    assert table.schema.field("vector").type.list_size == 16
    rows = table.to_pylist()
    assert [(r["video_id"], r["dedup_rank"], r["kept"], r["nearest_id"]) for r in rows] == [
        ("a", 0, True, None), ("b", 1, True, "a"), ("a2", 2, False, "a")]
    np.testing.assert_allclose(rows[2]["vector"], A, atol=1e-6)


def test_a_restarted_worker_returns_logged_decisions_and_continues_the_ranks(tmp_path):
    first = operator(tmp_path)
    out1 = apply_to_live_rows(first, batch_of(["a", "b", "a2"], [A, B, A]))
    # The worker dies after logging; Ray Data sends the batch again to its replacement.
    again = operator(tmp_path)
    out2 = apply_to_live_rows(again, batch_of(["a", "b", "a2"], [A, B, A]))
    assert fates(out2) == fates(out1)
    assert json.loads(out2["reject_detail"][2]) == json.loads(out1["reject_detail"][2])
    assert len(list((tmp_path / LOG_FOLDER).glob("*.parquet"))) == 1  # nothing decided twice
    # A batch mixing a logged video and new ones: new ranks follow the logged ones.
    out3 = apply_to_live_rows(again, batch_of(["c", "b", "b2"], [C, B, B]))
    assert list(out3["dedup_rank"]) == [3, 1, 4]
    assert list(out3["reject_reason"]) == [None, None, "duplicate"]


def test_a_video_kept_by_dedup_stays_in_the_pool_whatever_later_stages_do(tmp_path):
    # "a" is kept by dedup and then rejected downstream: it is in no dataset/ file. The rerun
    # rebuilds from the log, so a near-duplicate of "a" is still dropped and names "a".
    apply_to_live_rows(operator(tmp_path), batch_of(["a", "b"], [A, B]))
    near_a = unit(A + 0.05 * RNG.standard_normal(16) / 4)
    out = apply_to_live_rows(operator(tmp_path), batch_of(["a_again"], [near_a]))
    assert out["reject_reason"][0] == "duplicate"
    assert json.loads(out["reject_detail"][0])["nearest_id"] == "a"
    assert out["dedup_rank"][0] == 2


def test_a_failed_log_write_leaves_pool_and_ranks_unchanged(tmp_path, monkeypatch):
    op = operator(tmp_path)
    apply_to_live_rows(op, batch_of(["a"], [A]))

    def fail(*args, **kwargs):
        raise OSError("storage unavailable")

    monkeypatch.setattr(DecisionLog, "append", fail)
    with pytest.raises(OSError, match="storage unavailable"):
        op(batch_of(["b"], [B]))
    assert len(op.index) == 1 and op.index.next_rank == 1
    monkeypatch.undo()
    out = apply_to_live_rows(op, batch_of(["b"], [B]))
    assert list(out["dedup_rank"]) == [1]


def stream(n=1500, d=32, seed=3):
    rng = np.random.default_rng(seed)
    return plant_near_duplicates(clustered(n, d, 25, rng, spread=(0.4, 0.9)), 0.3, rng)


def run_with_restarts(out_dir, x, batch, restarts, **config):
    """Decide ``x`` in batches, replacing the worker (a fresh one, set up from the log) at the
    given batch numbers, re-sending the batch it was working on when it was logged already."""
    op = operator(out_dir, **config)
    ranks, kept = {}, {}
    starts = list(range(0, len(x), batch))
    b = 0
    while b < len(starts):
        s = starts[b]
        ids = [f"v{i}" for i in range(s, min(s + batch, len(x)))]
        out = apply_to_live_rows(op, batch_of(ids, x[s : s + batch]))
        for vid, rank, reason in zip(ids, out["dedup_rank"], out.get("reject_reason", [None] * len(ids)),
                                     strict=True):
            assert ranks.setdefault(vid, rank) == rank
            kept[vid] = reason is None
        if b in restarts:
            restarts = restarts - {b}
            op = operator(out_dir, **config)
            continue  # the same batch again: its decisions come from the log
        b += 1
    return kept, ranks


@pytest.mark.parametrize("shards", [1, 4])
@pytest.mark.parametrize("file_rows", [0, 250])
def test_restarts_mid_run_give_the_uninterrupted_result(tmp_path, shards, file_rows):
    x = stream()
    config = {"shards": shards, "probe_shards": shards, "train_size": 300, "log_file_rows": file_rows}
    calm = run_with_restarts(tmp_path / "calm", x, 100, set(), **config)
    restarted = run_with_restarts(tmp_path / "restarted", x, 100, {0, 4, 9}, **config)
    assert restarted == calm
    assert sorted(calm[1].values()) == list(range(len(x)))  # each rank once
    reference, _, _ = greedy_reference(x, 0.9)  # all parts probed: the exact greedy rule
    assert [calm[0][f"v{i}"] for i in range(len(x))] == reference.tolist()
    if shards > 1:
        assert (tmp_path / "calm" / LOG_FOLDER / "centroids.npy").is_file()


def logged(out_dir) -> list[tuple]:
    log = DecisionLog(str(out_dir))
    return [(r["video_id"], r["dedup_rank"], r["kept"], r["nearest_id"])
            for t in log.tables(("video_id", "dedup_rank", "kept", "nearest_id")) for r in t.to_pylist()]


def decide_all(out_dir, x, batch: int, **config) -> None:
    op = operator(out_dir, **config)
    for s in range(0, len(x), batch):
        apply_to_live_rows(op, batch_of([f"v{i}" for i in range(s, min(len(x), s + batch))], x[s:s + batch]))


def test_batch_files_are_merged_once_they_hold_log_file_rows_decisions(tmp_path):
    x = stream()[:1000]
    decide_all(tmp_path / "merged", x, 50, log_file_rows=300)
    decide_all(tmp_path / "plain", x, 50, log_file_rows=0)
    names = sorted(p.name for p in (tmp_path / "merged" / LOG_FOLDER).glob("*.parquet"))
    # 20 batches of 50: merged at 300, 600 and 900 decisions, one batch file after that.
    assert names == ["000000000000-000000000299.parquet", "000000000300-000000000599.parquet",
                     "000000000600-000000000899.parquet", "000000000900-000000000949.parquet",
                     "000000000950-000000000999.parquet"]
    assert len(list((tmp_path / "plain" / LOG_FOLDER).glob("*.parquet"))) == 20
    assert logged(tmp_path / "merged") == logged(tmp_path / "plain")
    # A restart merges what is left before it decides anything.
    operator(tmp_path / "merged", log_file_rows=300)
    names = sorted(p.name for p in (tmp_path / "merged" / LOG_FOLDER).glob("*.parquet"))
    assert names[-1] == "000000000900-000000000999.parquet" and len(names) == 4


def test_a_merge_cut_short_reads_the_same(tmp_path):
    x = stream()[:400]
    decide_all(tmp_path, x, 50, log_file_rows=0)
    before = logged(tmp_path)
    folder = tmp_path / LOG_FOLDER
    small = sorted(folder.glob("*.parquet"))
    # The merged file written, the small ones not removed yet: as if the worker died there.
    log = DecisionLog(str(tmp_path), file_rows=10_000)
    merged = pa.concat_tables([pq.read_table(p) for p in small[2:6]])
    pq.write_table(merged, folder / "000000000100-000000000299.parquet")
    assert len(log.files()) == 5
    assert logged(tmp_path) == before
    # The next merge takes the covered files away and keeps every decision once.
    assert log.compact() == 5
    assert [p.name for p in sorted(folder.glob("*.parquet"))] == ["000000000000-000000000399.parquet"]
    assert logged(tmp_path) == before
