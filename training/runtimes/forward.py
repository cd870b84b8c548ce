"""What a serving runtime is: a forward pass from prepared pixels to class probabilities.

Every runtime takes the (N, S, S, 3) float32 raw pixels that ``training.preprocess`` prepares and
returns (N, classes) float32 probabilities, so the API's micro-batcher can call any of them. Only
the forward pass is served this way; gradients (attacks, Grad-CAM, robustness) keep using the
Keras model in ``training.gradients``, on the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import keras
import numpy as np

from training import gradients
from training.metrics import softmax

KERAS = "keras"
KERAS_BF16 = "keras-bf16"
OPENVINO = "openvino"
OPENVINO_INT8 = "openvino-int8"
OPENVINO_BF16 = "openvino-bf16"
#: every runtime a deployment may name (``MEDROBUST_SERVE_RUNTIME``)
RUNTIMES: tuple[str, ...] = (KERAS, KERAS_BF16, OPENVINO, OPENVINO_BF16, OPENVINO_INT8)


class Forward(Protocol):
    """A forward pass: prepared pixels → probabilities. Called from one thread at a time."""

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


def keras_fp32(model: keras.Model) -> Forward:
    """Today's path and the parity reference: the Keras model's compiled forward pass."""

    def forward(pixels: np.ndarray) -> np.ndarray:
        return softmax(gradients.logits(model, pixels))

    return forward


@dataclass(frozen=True)
class ServingForward:
    """The forward pass that serves a model, and what an answer says about it.

    ``runtime`` is the runtime that actually runs (``keras`` after a fallback), ``requested``
    the one configured; ``artefact_sha256`` names the converted artefact when the runtime has
    one (None for the Keras runtimes, whose weights are the stored model's own).
    """

    runtime: str
    requested: str
    forward: Forward
    artefact_sha256: str | None = None
    fallback_reason: str | None = None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.forward(pixels)
