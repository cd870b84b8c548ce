"""What ``training.gradients`` compiles for a model goes when the model does.

The compiled functions close over their model; kept in a module-level cache keyed by the model
(a ``WeakKeyDictionary``), they kept every model ever attacked or explained alive: a full test
run grew past 18 GB and was killed, and an API or worker replacing models would grow the same
way. Each test drops its model and checks, through a weak reference, that it was freed.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import keras
import numpy as np
import pytest

from training import gradients
from training.explain.attention import attention_maps
from training.explain.cam import get_method
from training.models import build_model


def small_model() -> keras.Model:
    pixels = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, name="features")(pixels)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    return keras.Model(pixels, keras.layers.Dense(2, name="logits")(pooled))


def freed_after(make: Callable[[], keras.Model], use: Callable[[keras.Model], object]) -> bool:
    model = make()
    use(model)
    reference = weakref.ref(model)
    del model
    gc.collect()
    return reference() is None


PIXELS = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
ONEHOT = np.eye(2, dtype=np.float32)[[0, 1]]


@pytest.mark.parametrize(
    "use",
    [
        lambda m: gradients.logits(m, PIXELS),
        lambda m: gradients.logits(m, PIXELS, training=True),
        lambda m: gradients.loss_input_gradient(m, PIXELS, ONEHOT),
        lambda m: gradients.linf_ascent_steps(
            m, PIXELS, PIXELS, ONEHOT, 2, 1.0, 2.0, (0.0, 255.0), False, training=True
        ),
        lambda m: get_method("gradcam", layer="features")(m, PIXELS),
    ],
    ids=["logits", "train-mode logits", "input gradient", "pgd steps", "grad-cam split"],
)
def test_a_model_is_freed_once_dropped(use):
    assert freed_after(small_model, use)


def test_the_control_a_model_still_held_stays():
    """The check can fail: a model someone still holds is not freed."""
    kept: list[keras.Model] = []
    assert not freed_after(small_model, lambda m: (gradients.logits(m, PIXELS), kept.append(m)))


@pytest.mark.slow
def test_an_attention_model_and_its_maps_model_are_freed():
    def make() -> keras.Model:
        return build_model("attention", num_classes=2, input_size=32, weights=None)

    pixels = np.zeros((1, 32, 32, 3), np.float32)
    assert freed_after(make, lambda m: attention_maps(m, pixels))


def test_a_model_saves_the_same_weights_after_its_caches_were_filled(tmp_path):
    """Keras' saving walks a model's attributes: what the cache keeps (here Grad-CAM's split
    models) must not be written into the model's file beside its own weights."""
    import zipfile

    import h5py

    def weight_entries(model: keras.Model, name: str) -> list[str]:
        path = tmp_path / f"{name}.keras"
        model.save(path)
        with zipfile.ZipFile(path) as archive:
            archive.extract("model.weights.h5", tmp_path / name)
        entries: list[str] = []
        with h5py.File(tmp_path / name / "model.weights.h5") as weights:
            weights.visit(entries.append)
        return sorted(entries)

    model = small_model()
    before = weight_entries(model, "before")
    get_method("gradcam", layer="features")(model, PIXELS)
    gradients.logits(model, PIXELS)
    assert weight_entries(model, "after") == before
