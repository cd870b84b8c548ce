"""``keras-bf16``: the stored model cloned under Keras's ``mixed_bfloat16`` policy.

Weights stay float32 variables (the same values as the stored model); each layer casts its inputs
and weights to bfloat16 and computes in it, which halves the memory traffic and, on CPUs with
AVX-512 BF16 or AMX, runs the convolutions and matmuls on bf16 units (oneDNN). Without such units
TensorFlow computes bf16 through conversions and is no faster (see the README's "Serving
runtimes"). The output layers stay float32, so the logits the softmax sees are not rounded to
bf16's 8-bit mantissa a second time.
"""

from __future__ import annotations

import keras
import numpy as np

from training import gradients
from training.metrics import softmax
from training.runtimes.forward import Forward

POLICY = "mixed_bfloat16"


def bf16_clone(model: keras.Model) -> keras.Model:
    """A copy of ``model`` under :data:`POLICY` with its weights, output layers in float32."""
    outputs = set(getattr(model, "output_names", []) or [])

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name not in outputs:
            config["dtype"] = POLICY
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def keras_bf16(model: keras.Model) -> Forward:
    """The bf16 clone's compiled forward pass, probabilities in float32."""
    clone = bf16_clone(model)

    def forward(pixels: np.ndarray) -> np.ndarray:
        return softmax(gradients.logits(clone, pixels))

    return forward
