"""Job submissions that name training types; validated by the API and again by the worker."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from training.data.registry import DatasetSpec
from training.robustness import EvaluationSpec


class EvaluationRequest(BaseModel):
    """A robustness evaluation: stored models attacked on a dataset split, split into shards."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        min_length=1,
        max_length=8,
        description="model refs NAME[:VERSION|ALIAS]; resolved to fixed versions on submission",
    )
    dataset: DatasetSpec
    evaluation: EvaluationSpec
    split: Literal["train", "val", "test"] = "test"
    limit: int | None = Field(None, ge=1, description="stratified cap on the images")
    shards: int | None = Field(
        None, ge=1, le=64, description="parallel shard tasks; default: the service's setting"
    )
