"""The ``cls`` feature is the last layer's class token before ``ln_post``, as the released code's
``CLIPVisionModel(...).hidden_states[-1][:, 0]``; ``channel_order: bgr`` reproduces its BGR input.

A tiny random-weight open_clip ViT (2 heads, QuickGELU as OpenAI's CLIP) is loaded through the
real loading code; the Hugging Face model gets the same weights converted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from operators.keyframes.clip_features import check_cls_support, residual_cls
from operators.keyframes.clip_model import ClipConfig, ClipImageEncoder

WIDTH, EMBED = 64, 32
TINY_VIT = {
    "embed_dim": EMBED,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": WIDTH, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _register(root, name: str, cfg: dict) -> str:
    import open_clip

    path = root / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import open_clip
    import torch

    root = tmp_path_factory.mktemp("tiny_vit")
    config_path = _register(root, "tiny-vit-cls", TINY_VIT)
    torch.manual_seed(1)
    model = open_clip.create_model("tiny-vit-cls", pretrained=None)
    with torch.no_grad():  # non-trivial layer norms, so a skipped ln_pre or an added ln_post shows
        for name, p in model.visual.named_parameters():
            if name.endswith(("ln_pre.weight", "ln_post.weight", "ln_1.weight", "ln_2.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith(("ln_pre.bias", "ln_post.bias", "ln_1.bias", "ln_2.bias")):
                p.normal_(0.0, 0.2)
    checkpoint = root / "tiny-vit-cls.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"model": "tiny-vit-cls", "pretrained": str(checkpoint), "model_config_path": config_path}


def encoder(tiny: dict[str, str], **overrides: object) -> ClipImageEncoder:
    values: dict[str, object] = {**tiny, "device": "cpu", "preprocess": "model", "image_batch_size": 3}
    values.update(overrides)
    return ClipImageEncoder(ClipConfig(**values))


def images(n: int, seed: int, size: tuple[int, int] = (72, 96)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        out.append(np.kron(small, np.ones((size[0] // 6, size[1] // 8, 1), dtype=np.uint8)))
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def manual_cls(visual, pixels):  # type: ignore[no-untyped-def]
    """The ViT forward written out: patches, class token, positions, ln_pre, every block."""
    import torch

    x = torch.nn.functional.conv2d(pixels, visual.conv1.weight, stride=visual.conv1.stride)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
    x = visual.ln_pre(x + visual.positional_embedding)
    for block in visual.transformer.resblocks:
        h = block.ln_1(x)
        x = x + block.attn(h, h, h, need_weights=False)[0]
        x = x + block.mlp(block.ln_2(x))
    return x[:, 0]


def test_default_is_the_class_token_in_fp32() -> None:
    config = ClipConfig()
    assert (config.feature, config.channel_order, config.precision) == ("cls", "rgb", "auto")


def test_cls_equals_a_manual_forward_before_ln_post(tiny: dict[str, str]) -> None:
    import torch

    enc = encoder(tiny)
    assert enc.dtype is None and enc.embed_dim == WIDTH
    pixels = enc.preprocess(images(5, 0))
    with torch.no_grad():
        want = manual_cls(enc.model.visual, pixels).numpy()
        raw = residual_cls(enc.model.visual, pixels).numpy()
    np.testing.assert_allclose(raw, want, rtol=1e-5, atol=1e-5)
    got = enc.embed(images(5, 0))  # in chunks of 3, normalized
    assert got.shape == (5, WIDTH) and got.dtype == np.float32
    np.testing.assert_allclose(got, unit(want), atol=1e-5)


def test_cls_is_what_open_clip_feeds_ln_post(tiny: dict[str, str]) -> None:
    import torch

    enc = encoder(tiny)
    visual = enc.model.visual
    pixels = enc.preprocess(images(4, 1))
    seen = {}
    hook = visual.transformer.register_forward_hook(lambda m, i, out: seen.update(out=out))
    try:
        with torch.no_grad():
            embedded = enc.model.encode_image(pixels)
            cls = residual_cls(visual, pixels)
    finally:
        hook.remove()
    torch.testing.assert_close(cls, seen["out"][:, 0])
    torch.testing.assert_close(visual.ln_post(cls) @ visual.proj, embedded)
    # ... and it is a different feature from the embedding: the cosines between frames differ.
    cos_cls = unit(cls.numpy()) @ unit(cls.numpy()).T
    cos_embed = unit(embedded.numpy()) @ unit(embedded.numpy()).T
    assert np.abs(cos_cls - cos_embed).max() > 1e-3


def test_embed_feature_is_open_clips_encode_image(tiny: dict[str, str]) -> None:
    import torch

    enc = encoder(tiny, feature="embed")
    assert enc.embed_dim == EMBED
    pixels = enc.preprocess(images(3, 2))
    with torch.no_grad():
        want = torch.nn.functional.normalize(enc.model.encode_image(pixels), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode(pixels), want, atol=1e-6)


def test_bgr_channel_order_feeds_the_swapped_image(tiny: dict[str, str]) -> None:
    rgb = images(3, 3)
    swapped = [np.ascontiguousarray(im[..., ::-1]) for im in rgb]
    for mode in ("model", "tensor"):
        bgr = encoder(tiny, channel_order="bgr", preprocess=mode)
        plain = encoder(tiny, preprocess=mode)
        np.testing.assert_allclose(bgr.embed(rgb), plain.embed(swapped), atol=1e-6)
        assert np.abs(bgr.embed(rgb) - plain.embed(rgb)).max() > 1e-3


def test_auto_precision_keeps_cls_in_fp32_on_cuda(tiny: dict[str, str]) -> None:
    import torch

    for feature, want in (("cls", None), ("embed", torch.bfloat16)):
        enc = encoder(tiny, feature=feature)
        enc.device = "cuda"  # what the choice would be on a GPU; nothing runs there
        assert enc._autocast_dtype(torch) is want


def _hf_state(visual) -> dict:  # type: ignore[no-untyped-def]
    """open_clip VisionTransformer weights under Hugging Face CLIPVisionTransformer names."""
    sd = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    out = {
        "embeddings.class_embedding": sd["class_embedding"],
        "embeddings.patch_embedding.weight": sd["conv1.weight"],
        "embeddings.position_embedding.weight": sd["positional_embedding"],
        "pre_layrnorm.weight": sd["ln_pre.weight"],
        "pre_layrnorm.bias": sd["ln_pre.bias"],
        "post_layernorm.weight": sd["ln_post.weight"],
        "post_layernorm.bias": sd["ln_post.bias"],
    }
    for i in range(len(visual.transformer.resblocks)):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[f"{src}attn.in_proj_{kind}"].chunk(3)
            out.update({f"{dst}self_attn.q_proj.{kind}": q, f"{dst}self_attn.k_proj.{kind}": k,
                        f"{dst}self_attn.v_proj.{kind}": v})
            pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                     "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
            for a, b in pairs.items():
                out[f"{dst}{b}.{kind}"] = sd[f"{src}{a}.{kind}"]
    return out


@pytest.fixture(scope="module")
def hf_model(tiny: dict[str, str]):  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")

    config = transformers.CLIPVisionConfig(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2, num_attention_heads=2,
        image_size=64, patch_size=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )
    model = transformers.CLIPVisionModel(config).eval()
    tower = getattr(model, "vision_model", model)
    missing, unexpected = tower.load_state_dict(_hf_state(encoder(tiny).model.visual), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    return model


def test_cls_equals_hugging_face_last_hidden_state_class_token(tiny, hf_model) -> None:  # type: ignore[no-untyped-def]
    import torch

    enc = encoder(tiny)
    pixels = enc.preprocess(images(4, 4))
    with torch.no_grad():
        hidden = hf_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 0]
        ours = residual_cls(enc.model.visual, pixels)
    torch.testing.assert_close(ours, hidden, rtol=1e-4, atol=1e-5)


def test_cls_with_bgr_reproduces_the_released_keyframe_similarities(tiny, hf_model) -> None:  # type: ignore[no-untyped-def]
    # The released code: OpenCV BGR frames -> CLIPImageProcessor -> CLIPVisionModel, class token
    # of the last hidden state, cosine between frames. Ours gets the frames as RGB.
    import torch
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    rgb = images(6, 5, size=(96, 128))
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in rgb]
    with torch.no_grad():
        pixels = processor(images=bgr, return_tensors="pt")["pixel_values"]
        released = hf_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 0].numpy()
    want = unit(released) @ unit(released).T
    for mode in ("model", "tensor"):
        ours = encoder(tiny, channel_order="bgr", preprocess=mode).embed(rgb)
        assert np.abs(ours @ ours.T - want).max() < 1e-4, mode
    for other in (encoder(tiny).embed(rgb), encoder(tiny, channel_order="bgr", feature="embed").embed(rgb)):
        assert np.abs(other @ other.T - want).max() > 5e-3  # any other combination is not the same


@pytest.mark.parametrize(
    ("vision", "message"),
    [({"pool_type": "avg"}, "pool_type='avg'"), ({"attentional_pool": True}, "attentional pooler")],
)
def test_cls_refuses_towers_whose_class_token_is_not_the_feature(tmp_path, vision, message) -> None:  # type: ignore[no-untyped-def]
    import open_clip

    cfg = json.loads(json.dumps(TINY_VIT))
    cfg["vision_cfg"].update(vision)
    name = f"tiny-vit-{next(iter(vision))}"
    _register(tmp_path, name, cfg)
    model = open_clip.create_model(name, pretrained=None)
    with pytest.raises(ValueError, match=message) as info:
        check_cls_support(model.visual)
    assert "clip.feature: embed" in str(info.value)


def test_cls_refuses_a_tower_without_class_token() -> None:
    class ResNetTower:
        pass

    with pytest.raises(ValueError, match="ResNetTower.*class_embedding"):
        check_cls_support(ResNetTower())
