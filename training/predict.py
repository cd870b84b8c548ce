"""Class probabilities for raw images from a stored model, preprocessed as it was trained."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from training.fit import softmax
from training.preprocess import prepare_batch
from training.store import LoadedModel


class Prediction(BaseModel):
    """One image's prediction, naming the model that made it."""

    model: str
    version: int
    weights_sha256: str
    probabilities: dict[str, float]
    top_class: str
    top_probability: float


def predict_images(loaded: LoadedModel, images: list[np.ndarray]) -> list[Prediction]:
    """Decoded images (any size, RGB or grayscale) → one :class:`Prediction` each."""
    manifest = loaded.manifest
    batch = prepare_batch(images, manifest.preprocess)
    probabilities = softmax(np.asarray(loaded.model.predict(batch, verbose=0)))
    predictions = []
    for row in probabilities:
        top = int(row.argmax())
        predictions.append(
            Prediction(
                model=manifest.name,
                version=manifest.version,
                weights_sha256=manifest.weights_sha256,
                probabilities={c: float(p) for c, p in zip(manifest.class_names, row, strict=True)},
                top_class=manifest.class_names[top],
                top_probability=float(row[top]),
            )
        )
    return predictions
