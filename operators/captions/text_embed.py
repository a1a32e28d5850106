"""Embed each ``short_caption`` for semantic dedup (step 2 of ShareGPT4Video).

The paper uses BERT-base-uncased's [CLS] vector; any Hugging Face encoder works, with mean
pooling over real tokens as an option (the right choice for sentence-transformers models).
Vectors are L2-normalised float32, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field

from operators.base import Batch, Operator, Resources, batch_size_of, object_column, reject
from operators.config import StrictModel
from operators.models import load_pretrained, resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

STAGE = "text_embed"


class TextEmbedConfig(StrictModel):
    model: str = Field(
        "bert-base-uncased", description="Hugging Face hub id or local path of a text encoder."
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="[CLS] vector (paper) or mean over real tokens."
    )
    max_length: int = Field(128, gt=0, description="Tokens per caption; longer captions are truncated.")
    batch_size: int = Field(64, gt=0, description="Captions per forward pass and per Ray batch.")
    dtype: str = Field(
        "auto", description="auto (bf16/fp16 on GPU, fp32 on CPU), float32, float16 or bfloat16."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    trust_remote_code: bool = Field(
        False, description="Allow model repos that ship their own modelling code."
    )


class TextEncoder:
    """An ``AutoTokenizer`` + ``AutoModel`` pair turning texts into unit-length float32 vectors."""

    def __init__(self, config: TextEmbedConfig) -> None:
        self.config = config
        self.model: Any = None

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.tokenizer = load_pretrained(
            AutoTokenizer.from_pretrained, cfg.model, STAGE, trust_remote_code=cfg.trust_remote_code
        )
        self.model = load_pretrained(
            AutoModel.from_pretrained,
            cfg.model,
            STAGE,
            dtype=self.dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
        self.model.to(self.device).eval()
        logger.info("loaded text encoder %s on %s (%s)", cfg.model, self.device, self.dtype)

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32, each row L2-normalised."""
        import torch

        cfg = self.config
        # Similar lengths together: less padding, same results (padding is masked out).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(texts)
        for start in range(0, len(order), cfg.batch_size):
            chunk = order[start : start + cfg.batch_size]
            inputs = self.tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=cfg.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**inputs).last_hidden_state.float()
                if cfg.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = inputs["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for i, vector in zip(chunk, pooled.cpu().numpy(), strict=True):
                out[i] = vector.astype(np.float32, copy=False)
        return np.stack(out) if out else np.empty((0, 0), dtype=np.float32)


class TextEmbed(Operator):
    name = STAGE
    input_columns = ("short_caption",)
    output_columns = ("text_embedding",)
    stateful = True

    def __init__(self, config: TextEmbedConfig | None = None, resources: Resources | None = None) -> None:
        self.config = config or TextEmbedConfig()
        super().__init__(self.config, resources)
        self.encoder: TextEncoder | None = None

    def default_resources(self) -> Resources:
        # A BERT-base embedder uses a fraction of a modern GPU: four actors share one.
        return Resources(num_cpus=1, num_gpus=0.25, concurrency=(1, 8), batch_size=self.config.batch_size)

    def setup(self) -> None:
        self._loaded_encoder()

    def _loaded_encoder(self) -> TextEncoder:
        if self.encoder is None:
            encoder = TextEncoder(self.config)
            encoder.load()
            self.encoder = encoder
        return self.encoder

    def __call__(self, batch: Batch) -> Batch:
        encoder = self._loaded_encoder()
        n = batch_size_of(batch)
        captions = batch["short_caption"]
        rows = [i for i in range(n) if isinstance(captions[i], str) and captions[i].strip()]
        for i in sorted(set(range(n)) - set(rows)):
            reject(batch, i, STAGE, "empty_caption", "no short_caption to embed")
        vectors = encoder.encode([captions[i] for i in rows]) if rows else None
        embeddings: list[np.ndarray | None] = [None] * n
        for j, i in enumerate(rows):
            embeddings[i] = vectors[j]
        batch["text_embedding"] = object_column(embeddings)
        return batch
