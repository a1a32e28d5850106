"""ClipEncode with a tiny open_clip model loaded as a local checkpoint by the real loading code."""

from __future__ import annotations

import numpy as np
import pytest

from operators.base import object_column
from operators.keyframes.clip_encoder import ClipEncode
from operators.keyframes.clip_model import ClipConfig
from operators.video.frames import encode_jpeg
from testing.tiny_models import save_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Config file, model name and checkpoint path of a random-weight tiny CLIP."""
    root = tmp_path_factory.mktemp("tiny_clip")
    return {**save_tiny_clip(root), "root": str(root)}


def config(tiny_clip: dict[str, str], **overrides: object) -> ClipConfig:
    # The plumbing tests compare with open_clip's encode_image, i.e. feature 'embed';
    # test_clip_features.py covers the default class-token feature.
    values = {
        "feature": "embed",
        "model": tiny_clip["model"],
        "pretrained": tiny_clip["pretrained"],
        "model_config_path": tiny_clip["model_config_path"],
        "image_batch_size": 4,
    }
    values.update(overrides)
    return ClipConfig(**values)


def frames(n: int, seed: int, size: tuple[int, int] = (96, 128)) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        rgb = np.kron(small, np.ones((size[0] // 6, size[1] // 8, 1), dtype=np.uint8))
        out.append(encode_jpeg(rgb))
    return out


def run(op: ClipEncode, rows: list[list[bytes] | None]) -> dict[str, np.ndarray]:
    return op({"frames": object_column(rows)})


@pytest.fixture(scope="module")
def encoder(tiny_clip: dict[str, str]) -> ClipEncode:
    op = ClipEncode(config(tiny_clip))
    op.setup()
    return op


def test_declared_columns_and_resources() -> None:
    op = ClipEncode()
    assert op.input_columns == ("frames",) and op.output_columns == ("frame_embeddings",)
    assert op.stateful and op.resources.num_gpus == 1.0
    assert op.config.model == "ViT-L-14-336" and op.config.pretrained == "openai"


def test_local_checkpoint_gives_normalized_embeddings_per_row(encoder: ClipEncode) -> None:
    rows = [frames(3, 1), frames(5, 2, size=(60, 80)), [], frames(1, 3)]
    out = run(encoder, rows)
    embeddings = out["frame_embeddings"]
    assert embeddings.dtype == object and len(embeddings) == 4
    assert [e.shape for e in embeddings] == [(3, 32), (5, 32), (0, 32), (1, 32)]
    for e in embeddings:
        assert e.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert set(out) >= {"frames", "frame_embeddings"}


def test_default_feature_is_the_class_token(tiny_clip: dict[str, str]) -> None:
    op = ClipEncode(config(tiny_clip, feature="cls"))
    assert ClipConfig().feature == "cls"
    (e,) = run(op, [frames(3, 1)])["frame_embeddings"]
    assert e.shape == (3, 64) and e.dtype == np.float32  # the tower's width, not embed_dim 32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert run(op, [[]])["frame_embeddings"][0].shape == (0, 64)


def test_weights_come_from_the_checkpoint(tiny_clip: dict[str, str], encoder: ClipEncode) -> None:
    import open_clip
    import torch

    state = torch.load(tiny_clip["pretrained"])
    loaded = encoder.encoder.model.state_dict()
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    # A fresh random model differs, so the embeddings above really used the saved weights.
    other = open_clip.create_model(tiny_clip["model"], pretrained=None).state_dict()
    assert not torch.equal(other["visual.proj"], loaded["visual.proj"])


def test_batching_across_videos_does_not_change_embeddings(
    tiny_clip: dict[str, str], encoder: ClipEncode
) -> None:
    rows = [frames(3, 4), frames(6, 5)]
    pooled = run(encoder, rows)["frame_embeddings"]  # forward passes of 4 images
    big = ClipEncode(config(tiny_clip, image_batch_size=256))
    one_pass = run(big, rows)["frame_embeddings"]
    alone = [run(encoder, [r])["frame_embeddings"][0] for r in rows]
    for a, b, c in zip(pooled, one_pass, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)


def test_encoder_sees_rgb_not_bgr(encoder: ClipEncode) -> None:
    import torch
    from PIL import Image

    red = np.zeros((64, 64, 3), dtype=np.uint8)
    red[..., 0] = 255
    blue = red[..., ::-1].copy()  # the same array read as BGR

    model, transform = encoder.encoder.model, encoder.encoder.transform

    def direct(rgb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            e = model.encode_image(transform(Image.fromarray(rgb)).unsqueeze(0))
        return torch.nn.functional.normalize(e, dim=-1)[0].numpy()

    want, swapped = direct(red), direct(blue)
    assert float(want @ swapped) < 0.999  # the two orders are distinguishable
    got = run(encoder, [[encode_jpeg(red)]])["frame_embeddings"][0][0]
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert abs(float(got @ want) - 1.0) < abs(float(got @ swapped) - 1.0)


def test_tensor_preprocessing_matches_the_model_transform(tiny_clip: dict[str, str]) -> None:
    rows = [frames(4, 6, size=(90, 160)), frames(2, 7, size=(120, 96))]
    pil = ClipEncode(config(tiny_clip, preprocess="model"))
    tensor = ClipEncode(config(tiny_clip, preprocess="tensor"))
    a = np.concatenate(list(run(pil, rows)["frame_embeddings"]))
    b = np.concatenate(list(run(tensor, rows)["frame_embeddings"]))
    assert tensor.encoder.preprocess_mode == "tensor" and pil.encoder.preprocess_mode == "model"
    assert np.min(np.sum(a * b, axis=1)) > 0.999


def test_corrupt_frame_rejects_only_its_row(encoder: ClipEncode) -> None:
    good = frames(2, 8)
    out = run(encoder, [good, [good[0], b"not a jpeg"], good])
    assert out["reject_reason"][1] == "bad_frame" and out["reject_stage"][1] == "clip_encode"
    assert out["reject_reason"][0] is None and out["reject_reason"][2] is None
    np.testing.assert_allclose(out["frame_embeddings"][0], out["frame_embeddings"][2], atol=1e-6)
    assert out["frame_embeddings"][1].shape == (0, 32)


def test_load_failure_names_model_and_weights(tiny_clip: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "missing.pt")
    op = ClipEncode(config(tiny_clip, pretrained=missing))
    with pytest.raises(RuntimeError, match=tiny_clip["model"]) as info:
        op.setup()
    assert missing in str(info.value)


def test_half_precision_needs_cuda(tiny_clip: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        ClipEncode(config(tiny_clip, device="cpu", precision="bf16")).setup()
