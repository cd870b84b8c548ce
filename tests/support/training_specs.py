"""Training specs for the tiny 32-px models the core tests train on in-memory images."""

from __future__ import annotations

from training.config import TrainConfig, TrainingSpec
from training.data.registry import DatasetSpec
from training.preprocess import PreprocessConfig

TINY = 32


def tiny_spec(**train: object) -> TrainingSpec:
    """Two epochs of batch 8 at 32 px; ``train`` overrides any ``TrainConfig`` field."""
    return TrainingSpec(
        name="tiny",
        dataset=DatasetSpec(kind="folders", path="unused"),
        preprocess=PreprocessConfig(input_size=TINY),
        train=TrainConfig(**{"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, **train}),
    )
