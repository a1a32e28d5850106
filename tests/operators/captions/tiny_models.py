"""Test helpers on top of the package's tiny models (``ray_jobs.tiny_models``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from operators.base import object_column
from operators.video.frames import encode_jpeg
from ray_jobs.tiny_models import SPECIAL, WORDS, bert_tokenizer, save_tiny_bert, save_tiny_git

__all__ = ["save_tiny_bert", "save_tiny_git", "save_tiny_llava", "make_batch", "video_frames"]


def video_frames(num_frames: int, seed: int, size: tuple[int, int] = (48, 64)) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_jpeg(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(num_frames)]


def make_batch(
    frame_counts: list[int],
    source_captions: list[str | None] | None = None,
    size: tuple[int, int] = (48, 64),
) -> dict[str, np.ndarray]:
    n = len(frame_counts)
    return {
        "video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
        "frames": object_column([video_frames(k, seed=i, size=size) for i, k in enumerate(frame_counts)]),
        "frame_timestamps": object_column([[2.0 * j for j in range(k)] for k in frame_counts]),
        "source_caption": object_column(source_captions or [None] * n),
    }


CHAT_TEMPLATE = (
    "{% for message in messages %}USER: {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def save_tiny_llava(folder: Path) -> Path:
    """A LLaVA-style image-text-to-text VLM with a chat template (backend hf_vlm, vlm_input=images)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(0)
    tokenizer = bert_tokenizer(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    with torch.no_grad():
        model.lm_head.weight[: len(SPECIAL)] = 0.0
        model.lm_head.weight[len(SPECIAL) + len(WORDS) :] = 0.0  # only whole words come out
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=16,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
    )
    processor.save_pretrained(folder)
    return folder
