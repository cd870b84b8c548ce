"""Tiny models and data shared by the attack tests (cached per test process).

* :func:`resnet` — the project's ResNet-50 baseline at 32 px, random init with fixed seeds, its
  logits bias centred on a reference batch so predictions differ across images (a random-init
  ResNet otherwise predicts one class with large logits). Used for the ART cross-checks.
* :func:`small_cnn` — a few-layer CNN trained for a second on a synthetic 3-class task (the class
  brightens one colour channel), so attacks have a meaningful, accurate model to break.
"""

from __future__ import annotations

import functools

import keras
import numpy as np

from training import gradients
from training.models import LOGITS_LAYER, build_model

SIZE = 32
NUM_CLASSES = 3


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images in [0, 255] whose class ``k`` adds 55 to colour channel ``k``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = rng.uniform(0, 200, (n, SIZE, SIZE, 3)).astype(np.float32)
    x[np.arange(n), :, :, y] += 55
    return x, y


@functools.cache
def small_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    pixels = keras.Input((SIZE, SIZE, 3))
    hidden = keras.layers.Rescaling(1 / 255.0)(pixels)
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Conv2D(16, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(pixels, keras.layers.Dense(NUM_CLASSES)(hidden), name="small_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    x, y = synthetic(512, seed=2)
    model.fit(x, y, batch_size=64, epochs=5, verbose=0)
    return model


@functools.cache
def resnet() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model("baseline", num_classes=NUM_CLASSES, input_size=SIZE)
    reference = np.random.default_rng(0).uniform(0, 255, (64, SIZE, SIZE, 3)).astype(np.float32)
    layer = model.get_layer(LOGITS_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias - gradients.logits(model, reference).mean(axis=0)])
    return model


def resnet_batch() -> tuple[np.ndarray, np.ndarray]:
    """12 images for :func:`resnet` with mixed predictions; every third label is wrong."""
    x = np.random.default_rng(0).uniform(0, 255, (12, SIZE, SIZE, 3)).astype(np.float32)
    y = np.argmax(gradients.logits(resnet(), x), axis=1)
    y[::3] = (y[::3] + 1) % NUM_CLASSES
    return x, y


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(gradients.logits(model, x), axis=1) == y))


def correct(model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.argmax(gradients.logits(model, x), axis=1) == y
