"""Tiny models for the trust tests, cached per test process.

* :func:`synthetic_cnn` — a few-layer CNN trained in a second on a synthetic 3-class task (class
  ``k`` brightens colour channel ``k``); for the data-free unit tests.
* :func:`ham_case` — the same CNN shape trained on real HAM10000 pixels at 32 px, as in
  ``tests/attacks/test_attack_strong_art_crosscheck.py`` (420 class-balanced training images,
  140 class-balanced test images), optionally with Gaussian noise augmentation of σ pixels
  (a ``GaussianNoise`` layer right after rescaling, σ/255 there: active in training only, like
  ``train.noise_sigma``), which is what makes randomized smoothing meaningful.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np

from training.data import load_ham10000
from training.preprocess import read_image

SIZE, HAM_CLASSES, SYNTHETIC_CLASSES = 32, 7, 3


def _cnn(num_classes: int, noise_sigma: float, width: int) -> keras.Model:
    pixels = keras.Input((SIZE, SIZE, 3))
    hidden = keras.layers.Rescaling(1 / 255.0)(pixels)
    if noise_sigma > 0:  # σ pixels before rescaling = σ/255 after (the layer caps stddev at 1)
        hidden = keras.layers.GaussianNoise(noise_sigma / 255.0)(hidden)
    hidden = keras.layers.Conv2D(width, 3, activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Conv2D(2 * width, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(pixels, keras.layers.Dense(num_classes)(hidden), name="trust_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images in [0, 255] whose class ``k`` adds 55 to colour channel ``k``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, SYNTHETIC_CLASSES, n)
    x = rng.uniform(0, 200, (n, SIZE, SIZE, 3)).astype(np.float32)
    x[np.arange(n), :, :, y] += 55
    return x, y


@functools.cache
def synthetic_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = _cnn(SYNTHETIC_CLASSES, noise_sigma=0.0, width=8)
    x, y = synthetic(512, seed=2)
    model.fit(x, y, batch_size=64, epochs=5, verbose=0)
    return model


@dataclass(frozen=True)
class HamCase:
    model: keras.Model
    x_test: np.ndarray
    y_test: np.ndarray


def _load(ham, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = [
        cv2.resize(read_image(ham.paths[i]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        for i in indices
    ]
    return np.stack(images).astype(np.float32), ham.labels[indices]


def _balanced(ham, split: str, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picked = []
    for k in range(HAM_CLASSES):
        pool = np.flatnonzero((ham.labels == k) & (ham.source_split == split))
        picked.extend(rng.choice(pool, min(per_class, len(pool)), replace=False))
    return np.sort(np.array(picked))


@functools.cache
def _ham_data(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ham = load_ham10000(data_dir / "ham10000_200x150")
    rng = np.random.default_rng(0)
    x_train, y_train = _load(ham, _balanced(ham, "train", 60, rng))
    x_test, y_test = _load(ham, _balanced(ham, "test", 20, rng))
    return x_train, y_train, x_test, y_test


@functools.cache
def ham_case(data_dir: Path, noise_sigma: float = 0.0) -> HamCase:
    """A tiny CNN trained on real HAM10000 at 32 px (with noise augmentation of σ pixels)."""
    x_train, y_train, x_test, y_test = _ham_data(data_dir)
    keras.utils.set_random_seed(0)
    model = _cnn(HAM_CLASSES, noise_sigma, width=16)
    model.fit(x_train, y_train, batch_size=32, epochs=60, verbose=0)
    return HamCase(model, x_test, y_test)
