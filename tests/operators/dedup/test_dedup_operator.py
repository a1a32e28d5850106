import json

import numpy as np

from operators.base import REJECT_COLUMNS, apply_to_live_rows, object_column
from operators.dedup import DedupConfig, ResumeState, SemanticDedup

from .synthetic import random_unit, unit

RNG = np.random.default_rng(11)
A, B, C = random_unit(3, 16, RNG)
NEAR_A = unit(A + 0.05 * RNG.standard_normal(16) / 4)


def make_batch(ids, vectors, as_matrix=False):
    column = np.stack(vectors) if as_matrix else object_column([list(map(float, v)) for v in vectors])
    return {"video_id": object_column(ids), "text_embedding": column}


def run(op, batch):
    return apply_to_live_rows(op, batch)


def test_duplicates_are_rejected_with_nearest_kept_video():
    op = SemanticDedup(DedupConfig(threshold=0.9, use_gpu=False))
    op.setup()
    # Not normalized on input: the operator normalizes.
    out = run(op, make_batch(["a", "b", "a2"], [3 * A, B, NEAR_A]))
    assert list(out["dedup_rank"]) == [0, 1, 2]
    assert list(out["reject_reason"]) == [None, None, "duplicate"]
    assert out["reject_stage"][2] == "semantic_dedup"
    detail = json.loads(out["reject_detail"][2])
    assert detail["nearest_id"] == "a" and detail["similarity"] >= 0.9
    assert out["dedup_nearest_id"][2] == "a" and out["dedup_similarity"][2] == detail["similarity"]
    assert out["dedup_nearest_id"][0] is None and out["dedup_similarity"][0] is None
    # A 2-D embedding column works too, and the pool carries over between batches.
    out = run(op, make_batch(["c", "b2"], [C, B], as_matrix=True))
    assert list(out["reject_reason"]) == [None, "duplicate"]
    assert list(out["dedup_rank"]) == [3, 4]
    assert json.loads(out["reject_detail"][1])["nearest_id"] == "b"


def test_produces_exactly_the_declared_columns():
    op = SemanticDedup(DedupConfig(use_gpu=False))
    op.setup()
    batch = make_batch(["a", "a2"], [A, A])
    out = op({k: v.copy() for k, v in batch.items()})
    assert set(out) == set(batch) | set(SemanticDedup.output_columns) | set(REJECT_COLUMNS)
    assert set(SemanticDedup.input_columns) <= set(batch)
    assert op.resources.concurrency == (1, 1)


def test_bad_embeddings_are_rejected_and_earlier_rejects_pass_through():
    op = SemanticDedup(DedupConfig(use_gpu=False))
    op.setup()
    batch = make_batch(["a", "zero", "gone"], [A, np.zeros(16), B])
    batch["text_embedding"][1] = [0.0] * 16
    batch["reject_stage"] = object_column([None, None, "probe"])
    batch["reject_reason"] = object_column([None, None, "too_long"])
    batch["reject_detail"] = object_column([None, None, ""])
    out = run(op, batch)
    assert list(out["reject_reason"]) == [None, "invalid_embedding", "too_long"]
    assert out["dedup_rank"][0] == 0 and out["dedup_rank"][1] is None and out["dedup_rank"][2] is None


def test_resume_rebuilds_the_pool_inside_setup():
    loaded = []

    def load():
        loaded.append(True)
        return ResumeState(ids=["a", "b"], vectors=np.stack([A, B]), next_rank=7)

    op = SemanticDedup(DedupConfig(use_gpu=False), resume=load)
    assert not loaded  # loading happens in the worker, not when the job is declared
    op.setup()
    out = run(op, make_batch(["a2", "c"], [A, C]))
    assert list(out["reject_reason"]) == ["duplicate", None]
    assert list(out["dedup_rank"]) == [7, 8]
    assert len(op.index) == 3


def test_disabled_keeps_everything():
    op = SemanticDedup(DedupConfig(enabled=False))
    op.setup()
    out = run(op, make_batch(["a", "a2"], [A, A]))
    assert list(out.get("reject_reason", [None, None])) == [None, None]
    assert list(out["dedup_rank"]) == [0, 1]
