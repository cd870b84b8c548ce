"""Class probabilities for raw images from a stored model, preprocessed as it was trained."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from training import gradients
from training.metrics import softmax
from training.preprocess import prepare_batch
from training.store import LoadedModel, ModelManifest


class Prediction(BaseModel):
    """One image's prediction, naming the model that made it."""

    model: str
    version: int
    weights_sha256: str
    probabilities: dict[str, float]
    top_class: str
    top_probability: float


def predict_images(loaded: LoadedModel, images: Sequence[np.ndarray]) -> list[Prediction]:
    """Decoded images (any size, RGB or grayscale) → one :class:`Prediction` each."""
    batch = prepare_batch(images, loaded.manifest.preprocess)
    probabilities = softmax(gradients.logits(loaded.model, batch))
    return [prediction_from_probabilities(loaded.manifest, row) for row in probabilities]


def prediction_from_probabilities(manifest: ModelManifest, row: np.ndarray) -> Prediction:
    """A :class:`Prediction` from one row of class probabilities."""
    top = int(row.argmax())
    return Prediction(
        model=manifest.name,
        version=manifest.version,
        weights_sha256=manifest.weights_sha256,
        probabilities={c: float(p) for c, p in zip(manifest.class_names, row, strict=True)},
        top_class=manifest.class_names[top],
        top_probability=float(row[top]),
    )
