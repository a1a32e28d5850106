"""Which CLIP image feature keyframe selection compares.

``cls``: the last transformer layer's class token, before ``ln_post`` and the projection: the
feature the released ShareGPT4Video code compares (``CLIPVisionModel(...).hidden_states[-1][:, 0]``
of ``openai/clip-vit-large-patch14-336``, 1024-d, fp32) and the one its 0.93 threshold was set on.
``embed``: open_clip's ``encode_image`` (``ln_post``, projection; 768-d for ViT-L/14), the
contrastive embedding. The two give a pair of frames different cosines, so one threshold picks
different keyframes; docs/keyframes.md says which combination reproduces what.
"""

from __future__ import annotations

from typing import Any, Literal

Feature = Literal["cls", "embed"]


def check_cls_support(visual: Any) -> None:
    """Raise a ``ValueError`` naming the model when its image tower has no class token whose
    last-layer state is the image feature: only open_clip's ``VisionTransformer`` with token
    pooling has one (CoCa's attentional pooler and global average pooling read other tokens;
    timm and ResNet towers have no class token)."""
    kind = type(visual).__name__
    missing = [a for a in ("conv1", "class_embedding", "positional_embedding", "transformer") if not hasattr(visual, a)]
    if missing:
        raise ValueError(
            f"clip.feature='cls' needs an open_clip VisionTransformer image tower; this model's is "
            f"{kind} (no {', '.join(missing)}): set clip.feature: embed"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError(
            f"clip.feature='cls': this {kind} pools with an attentional pooler (CoCa-style), so its "
            "class token is not its image feature: set clip.feature: embed"
        )
    pool = getattr(visual, "pool_type", "tok")
    if pool != "tok":
        raise ValueError(
            f"clip.feature='cls': this {kind} pools with pool_type={pool!r} (not the class token): "
            "set clip.feature: embed"
        )


def residual_cls(visual: Any, pixels: Any) -> Any:
    """[n, width] class-token states after the last transformer block of an open_clip
    ``VisionTransformer``, before ``ln_post``: open_clip's own forward, stopped there."""
    if hasattr(visual, "_embeds"):  # open_clip >= 2.24: patch, class and position embeddings, ln_pre
        x = visual._embeds(pixels)
    else:
        x = _embeds(visual, pixels)
    transformer = visual.transformer
    if hasattr(transformer, "batch_first"):
        x = transformer(x)  # takes and returns [n, tokens, width] whatever its inner layout
    else:  # older open_clip: the caller turns the batch into [tokens, n, width]
        x = transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    return x[:, 0]


def _embeds(visual: Any, pixels: Any) -> Any:
    import torch

    x = visual.conv1(pixels)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x) if hasattr(visual, "patch_dropout") else x
    return visual.ln_pre(x)


def feature_dim(model: Any, feature: Feature) -> int:
    """Width of the rows :func:`residual_cls` or ``encode_image`` return."""
    if feature == "cls":
        return int(model.visual.class_embedding.shape[-1])
    dim = getattr(model, "embed_dim", None) or getattr(model.visual, "output_dim", None)
    return int(dim)
