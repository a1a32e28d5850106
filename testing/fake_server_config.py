"""Settings of the local OpenAI-compatible test server (the ``test_server`` section of a config).

Kept apart from the server itself so that loading a config imports nothing heavy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from operators.config import StrictModel
from operators.llm.config import ModelPrice

FaultKind = Literal["429", "500", "503", "queue_full", "timeout", "disconnect", "malformed", "refusal"]


class FakeServerConfig(StrictModel):
    """The local OpenAI-compatible test server (the ``test_server`` section of a run's config).

    When ``enabled``, a run starts it in-process and points ``llm.base_url`` at it (smoke runs).
    """

    enabled: bool = Field(False, description="Start the local test server and send every call to it.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(0, ge=0, le=65535, description="Port; 0 picks a free one.")
    model: str = Field("fake-vlm", description="Model name the server answers as (any name is accepted).")
    requests_per_minute: int | None = Field(
        None, gt=0, description="Requests allowed per window (429 beyond it); None = no limit."
    )
    tokens_per_minute: int | None = Field(
        None, gt=0, description="Tokens (prompt + completion) allowed per window; None = no limit."
    )
    window_s: float = Field(60.0, gt=0, description="Length of the sliding rate-limit window in seconds.")
    latency_s: tuple[float, float] = Field(
        (0.0, 0.0), description="Answer latency drawn uniformly from [min, max] seconds."
    )
    fault_rates: dict[FaultKind, float] = Field(
        default_factory=dict,
        description="Probability of each injected fault per request: 429 (Retry-After 0.5 s), 500, 503, "
        "queue_full (503 of a server whose queue is full, as vLLM's --max-num-queued-reqs), "
        "timeout (hang), "
        "disconnect (drop the connection), malformed (invalid JSON body), refusal.",
    )
    hang_s: float = Field(600.0, gt=0, description="How long a 'timeout' fault hangs before answering.")
    seed: int = Field(0, description="Seed of the fault and latency draws (deterministic per request).")
    price: ModelPrice = Field(
        default_factory=lambda: ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0),
        description="What the run prices the server's model at (added to llm.prices), so smoke runs "
        "exercise the budget and cost accounting.",
    )
    allowed_image_counts: list[int] | None = Field(
        None, description="Numbers of images a request may carry (e.g. [0, 1, 2]); None = any."
    )

    @model_validator(mode="after")
    def _check(self) -> FakeServerConfig:
        lo, hi = self.latency_s
        if not 0 <= lo <= hi:
            raise ValueError("latency_s must be [min, max] with 0 <= min <= max")
        if any(not 0 <= r <= 1 for r in self.fault_rates.values()) or sum(self.fault_rates.values()) > 1:
            raise ValueError("fault_rates must be probabilities that sum to at most 1")
        return self


