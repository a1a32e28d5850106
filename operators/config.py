"""Typed configuration building blocks shared by every operator's config model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config model that refuses unknown keys and checks types, so typos fail up front."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
