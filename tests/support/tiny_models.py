"""Tiny models and data for the attack, robustness and trust tests (cached per test process).

* :func:`small_cnn` — a few-layer CNN trained for a second on a synthetic 3-class task (the class
  brightens one colour channel), so attacks have a meaningful, accurate model to break.
* :func:`resnet` — the project's ResNet-50 baseline at 32 px, random init with fixed seeds, its
  logits bias centred on a reference batch so predictions differ across images (a random-init
  ResNet otherwise predicts one class with large logits). Used for the ART cross-checks.
* :func:`ham_case` — the CNN shape of :func:`small_cnn`, twice as wide, trained on real HAM10000
  pixels at 32 px (420 class-balanced training images, 60 epochs: seconds on two cores), with 140
  class-balanced test images; optionally with Gaussian noise augmentation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import keras
import numpy as np

from training import gradients
from training.data import load_ham10000
from training.data.base import LabeledImages
from training.models import LOGITS_LAYER, ArchitectureConfig, build_model
from training.preprocess import PreprocessConfig, read_image
from training.store import ModelStore

SIZE = 32
NUM_CLASSES = 3  # of the synthetic task
HAM_CLASSES = 7


def cnn(
    num_classes: int, width: int, learning_rate: float, noise_sigma: float = 0.0, name: str = "cnn"
) -> keras.Model:
    """Two convolutions (``width`` and ``2·width`` filters) on [0, 255] pixels, compiled with
    Adam; ``noise_sigma`` > 0 adds Gaussian noise of σ pixels right after rescaling (σ/255
    there; active in training only, like ``train.noise_sigma``)."""
    pixels = keras.Input((SIZE, SIZE, 3))
    hidden = keras.layers.Rescaling(1 / 255.0)(pixels)
    if noise_sigma > 0:
        hidden = keras.layers.GaussianNoise(noise_sigma / 255.0)(hidden)
    hidden = keras.layers.Conv2D(width, 3, activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Conv2D(2 * width, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(pixels, keras.layers.Dense(num_classes)(hidden), name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


HAM_NAMES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def save_ham_pair(store: ModelStore, data_dir: Path, sigma: float) -> None:
    """``ham`` (trained clean) and ``ham-noise`` (Gaussian noise of ``sigma``, recorded in its
    spec so the API certifies it at that σ): the tiny HAM10000 CNNs of :func:`ham_case`."""
    save_tiny(store, ham_case(data_dir).model, "ham", HAM_NAMES, {"train": {}})
    noisy = ham_case(data_dir, sigma).model
    save_tiny(store, noisy, "ham-noise", HAM_NAMES, {"train": {"noise_sigma": sigma}})


def save_tiny(
    store: ModelStore, model: keras.Model, name: str, classes: Sequence[str], spec: dict
) -> None:
    """Store ``model`` as a 32-px "baseline" with ``classes`` and the (partial) training spec."""
    config = ArchitectureConfig(architecture="baseline", num_classes=len(classes), input_size=SIZE)
    store.save(
        model, name, config, PreprocessConfig(input_size=SIZE), list(classes), training_spec=spec
    )


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
    model = cnn(NUM_CLASSES, width=8, learning_rate=1e-2, name="small_cnn")
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


def correct(model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per image: does ``model`` classify it as ``y``?"""
    return np.argmax(gradients.logits(model, x), axis=1) == y


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(correct(model, x, y)))


class HamCase(NamedTuple):
    """A trained model and its test set: ``model, x_test, y_test = case``."""

    model: keras.Model
    x_test: np.ndarray
    y_test: np.ndarray


def _load(ham: LabeledImages, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = [
        cv2.resize(read_image(ham.paths[i]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        for i in indices
    ]
    return np.stack(images).astype(np.float32), ham.labels[indices]


def _balanced(
    ham: LabeledImages, split: str, per_class: int, rng: np.random.Generator
) -> np.ndarray:
    picked = []
    for k in range(HAM_CLASSES):
        pool = np.flatnonzero((ham.labels == k) & (ham.source_split == split))
        picked.extend(rng.choice(pool, min(per_class, len(pool)), replace=False))
    return np.sort(np.array(picked))


@functools.cache
def _ham_data(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """60 training and 20 test images per class (fewer where a class has fewer), at 32 px."""
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
    model = cnn(HAM_CLASSES, width=16, learning_rate=3e-3, noise_sigma=noise_sigma, name="ham_cnn")
    model.fit(x_train, y_train, batch_size=32, epochs=60, verbose=0)
    return HamCase(model, x_test, y_test)
