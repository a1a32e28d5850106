"""Configuration of the API client layer (``llm.*`` keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from operators.config import StrictModel


class ModelPrice(StrictModel):
    """USD per million tokens for one model."""

    input_per_mtok: float = Field(ge=0, description="USD per 1M input (prompt) tokens, images included.")
    output_per_mtok: float = Field(ge=0, description="USD per 1M output (completion) tokens.")


def default_prices() -> dict[str, ModelPrice]:
    # OpenAI list prices (standard tier) when this table was written; check yours and override
    # ``llm.prices.<model>`` in the config: the budget cap is only as right as these figures.
    table = {
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4-turbo": (10.00, 30.00),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
    }
    return {m: ModelPrice(input_per_mtok=i, output_per_mtok=o) for m, (i, o) in table.items()}


class PromptFiles(StrictModel):
    """Prompt templates of the captioning calls; None = the built-in ones in
    ``operators/captions/prompts/``. Templates are ``str.format`` strings (write ``{{`` for a brace);
    the fields each may use are listed in :mod:`operators.captions.diffsw_prompts`.
    ``llm.prompts: sharecaptioner`` is short for ``llm.prompts.set: sharecaptioner``."""

    set: Literal["default", "sharecaptioner"] = Field(
        "default",
        description="'default': this project's prompts, keyframes sent as separate images. "
        "'sharecaptioner': the released ShareCaptioner-Video prompt strings and layout (two frames "
        "stacked in one image with a 50 px white gap), for a server hosting that model "
        "(operators/captions/sharecaptioner.py).",
    )
    detailed: str | None = Field(
        None, description="Template file of keyframe 0's detailed caption (fields: frame_index, timestamp)."
    )
    differential: str | None = Field(
        None,
        description="Template file of a differential caption (fields: prev_caption, prev_index, "
        "prev_timestamp, frame_index, timestamp).",
    )
    summary: str | None = Field(
        None, description="Template file of the summary call (fields: captions, num_keyframes)."
    )


class LLMConfig(StrictModel):
    """The OpenAI-compatible endpoint and how the pipeline may use it (``llm.*``)."""

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="Any OpenAI-compatible endpoint: OpenAI, Azure OpenAI, vLLM or SGLang.",
    )
    model: str = Field("gpt-4o", description="Vision model for the captions and the summary.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the API key (read at client setup, never stored "
        "in the config); None for endpoints that need no key.",
    )
    requests_per_minute: int = Field(
        500, gt=0, description="Requests/min for the whole cluster (OpenAI tier 1 for gpt-4o: 500)."
    )
    tokens_per_minute: int = Field(
        30_000,
        gt=0,
        description="Tokens/min for the whole cluster, prompt + max_tokens as OpenAI counts them "
        "(tier 1 for gpt-4o: 30000; raise it to your tier).",
    )
    token_accounting: Literal["reserved", "usage"] = Field(
        "reserved",
        description="How the provider counts tokens/min. 'reserved': prompt + max_tokens when the "
        "request arrives (OpenAI, Azure OpenAI): a call is charged that, whatever it used. 'usage': "
        "the tokens the response reports (most self-hosted gateways, the local test server): "
        "the limiter gives back what a call reserved and did not use.",
    )
    rate_window_s: float = Field(
        60.0, gt=0, description="Window the two limits are counted over (60 for every real provider)."
    )
    rate_headroom: float = Field(
        0.03,
        ge=0,
        lt=0.5,
        description="Fraction of each limit kept unused, so clock skew and in-flight requests never "
        "cross the provider's window.",
    )
    max_attempts: int = Field(6, ge=1, description="Attempts per call, the first included.")
    backoff_base_s: float = Field(1.0, gt=0, description="First retry waits up to this long (full jitter).")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest wait between two attempts.")
    timeout_s: float = Field(120.0, gt=0, description="Timeout of one HTTP request.")
    refusal_retries: int = Field(
        1, ge=0, description="Extra attempts after a model refusal (sampling may not refuse twice)."
    )
    detail: Literal["low", "high", "auto"] = Field(
        "high",
        description="Image detail. 'high' (tiles) keeps the small objects and text a detailed caption "
        "needs; 'low' is 85 tokens per image but 512 px. Estimates treat 'auto' as 'high'.",
    )
    image_longest_side: int = Field(1024, gt=0, description="Keyframes are resized to this longest side.")
    image_jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of resized keyframes.")
    image_base_tokens: int = Field(85, ge=0, description="Tokens per image before tiles (provider rule).")
    image_tile_tokens: int = Field(170, ge=0, description="Tokens per 512 px tile in 'high' detail.")
    tokenizer: Literal["auto", "tiktoken", "estimate"] = Field(
        "auto",
        description="Text token counts: 'auto' = tiktoken if its encoding file is cached locally, "
        "else a bytes/3 estimate; 'tiktoken' may download it; 'estimate' never uses tiktoken.",
    )
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature of every call.")
    caption_max_tokens: int = Field(512, gt=0, description="max_tokens of each keyframe caption call.")
    summary_max_tokens: int = Field(1024, gt=0, description="max_tokens of the summary call.")
    max_tokens_retry: int = Field(
        2048,
        gt=0,
        description="A caption cut at max_tokens (finish_reason 'length') is asked again once with "
        "this max_tokens; cut again, the video is rejected with 'truncated_caption'.",
    )
    summary_model: str | None = Field(
        None,
        description="Model of the text-only calls (summary, clip summaries, recaption), e.g. a "
        "cheaper one; None = llm.model. Priced from llm.prices like llm.model.",
    )
    method: Literal["diffsw", "fast"] = Field(
        "diffsw",
        description="'diffsw': the paper's differential sliding-window captions and a summary. "
        "'fast': one call per video on its keyframes tiled into one image, no summary call "
        "(ShareCaptioner-Video's fast captioning; cheap first pass).",
    )
    fast_grid_columns: int = Field(
        0, ge=0, description="Columns of the fast-mode grid; 0 = ceil(sqrt(keyframes))."
    )
    fast_max_keyframes: int = Field(
        16, gt=0, description="Fast mode tiles at most this many keyframes (evenly chosen)."
    )
    on_frame_error: Literal["reject_video", "skip_frame"] = Field(
        "reject_video",
        description="A refusal or unusable answer on one keyframe: 'reject_video' rejects the "
        "video; 'skip_frame' drops that keyframe, continues from the last good caption and "
        "lists the dropped keyframes in the row's skipped_keyframes (keyframe 0 can be skipped "
        "too: the next keyframe gets the detailed caption).",
    )
    outage_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="During an endpoint outage every caller waits (one probe at a time) up to "
        "this long; then the waiting videos are rejected with 'api_unavailable'.",
    )
    circuit_failures: int = Field(
        3,
        ge=1,
        description="Consecutive endpoint failures (5xx, timeouts, dropped connections) that open "
        "the outage circuit, if they come from at least circuit_callers videos.",
    )
    circuit_callers: int = Field(
        2, ge=1, description="Different videos among those failures (one failing video is not an outage)."
    )
    probe_base_s: float = Field(2.0, gt=0, description="First probe of an open circuit after this long.")
    probe_max_s: float = Field(
        120.0, gt=0, description="Longest interval between probes (doubling from probe_base_s)."
    )
    budget_usd: float | None = Field(
        None, gt=0, description="Stop starting new videos once this much is spent; None = no cap."
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=default_prices, description="USD per 1M tokens, per model name."
    )
    cache: bool = Field(True, description="Keep every answer in a content-addressed cache.")
    cache_dir: str | None = Field(
        None, description="Where the cache lives (any fsspec URI); None = {output}/llm_cache."
    )
    concurrency_per_actor: int = Field(16, gt=0, description="Videos in flight in one API actor.")
    prompts: PromptFiles = Field(default_factory=PromptFiles, description="Prompt template overrides.")
    summarize_single_keyframe: bool = Field(
        True,
        description="Make the summary call for a video with one keyframe too (the paper always "
        "summarizes); False uses its detailed caption as the summary.",
    )

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompt_set(cls, value: object) -> object:
        return {"set": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        for model in {self.model, self.text_model}:
            if self.budget_usd is not None and model not in self.prices:
                raise ValueError(f"llm.budget_usd is set but llm.prices has no entry for model {model!r}")
        if self.probe_max_s < self.probe_base_s:
            raise ValueError("llm.probe_max_s must be >= llm.probe_base_s")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("llm.backoff_max_s must be >= llm.backoff_base_s")
        return self

    @property
    def text_model(self) -> str:
        """The model of the text-only calls (``llm.summary_model``, else ``llm.model``)."""
        return self.summary_model or self.model

    def price(self, model: str | None = None) -> ModelPrice | None:
        return self.prices.get(model or self.model)
