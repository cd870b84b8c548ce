"""Tiny real data for the core tests: a few dozen images for 32-px ResNet-50s."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.base import LabeledImages


@pytest.fixture
def tiny_images() -> LabeledImages:
    """Two classes of 40×40 RGB images (dark vs bright, with noise) in memory."""
    rng = np.random.default_rng(11)
    labels = np.array([0, 1] * 12)
    base = np.where(labels[:, None, None, None] == 1, 170, 70)
    arrays = np.clip(base + rng.normal(0, 25, size=(24, 40, 40, 3)), 0, 255).astype(np.uint8)
    return LabeledImages(
        name="tiny",
        class_names=("dark", "bright"),
        labels=labels,
        groups=np.array([f"g{i}" for i in range(24)]),
        arrays=arrays,
    )


@pytest.fixture
def tiny_splits() -> dict[str, np.ndarray]:
    return {"train": np.arange(0, 16), "val": np.arange(16, 20), "test": np.arange(20, 24)}
