"""One explainer instance serves concurrent requests: same maps as serial calls, from any thread.

The methods keep no per-call state, and the compiled gradient functions in training.gradients
capture none either; these tests run one instance from several threads on different images,
once on an already-warm ResNet-50 and once from a cold start (the first calls race to compile).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest

from training.explain import GradCAM, GradCAMPlusPlus, aggregated_attention
from training.models import build_model

SIZE, THREADS = 64, 4
PIXELS = np.random.default_rng(11).uniform(0, 255, size=(6, SIZE, SIZE, 3)).astype("float32")


def _run_concurrently(function, items, repeats: int = 2) -> list:
    """``function(item)`` for each item, ``repeats`` times, all from a pool released together."""
    jobs = [item for _ in range(repeats) for item in items]
    barrier = threading.Barrier(THREADS)

    def job(item):
        if threading.current_thread().name not in started:
            started.add(threading.current_thread().name)
            barrier.wait(timeout=60)
        return function(item)

    started: set[str] = set()
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(job, jobs))


@pytest.fixture(scope="module")
def attention_model() -> keras.Model:
    keras.utils.set_random_seed(2)
    return build_model("attention", num_classes=3, input_size=SIZE, attention_heads=4)


@pytest.mark.parametrize("method", [GradCAM(), GradCAMPlusPlus()], ids=["gradcam", "gradcam++"])
def test_shared_instance_matches_serial_calls(attention_model, method):
    images = list(range(len(PIXELS)))
    serial = [method(attention_model, PIXELS[i : i + 1]) for i in images]
    concurrent = _run_concurrently(lambda i: method(attention_model, PIXELS[i : i + 1]), images)
    for index, result in zip(images * 2, concurrent, strict=True):
        np.testing.assert_allclose(result.maps, serial[index].maps, atol=1e-6)
        np.testing.assert_array_equal(result.class_indices, serial[index].class_indices)
        np.testing.assert_allclose(result.logits, serial[index].logits, rtol=1e-5, atol=1e-5)
    # the images differ, so a mix-up between threads would show
    assert len({result.maps.tobytes() for result in serial}) == len(images)


def test_attention_maps_from_threads(attention_model):
    serial = [aggregated_attention(attention_model, PIXELS[i]) for i in range(len(PIXELS))]
    concurrent = _run_concurrently(
        lambda i: aggregated_attention(attention_model, PIXELS[i]), list(range(len(PIXELS)))
    )
    for index, result in enumerate(concurrent):
        np.testing.assert_allclose(result, serial[index % len(PIXELS)], atol=1e-6)


def test_cold_start_concurrency_on_a_fresh_model():
    rng = np.random.default_rng(4)
    pixels = keras.Input((6, 6, 3), name="pixels")
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(pixels)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(pixels, keras.layers.Dense(3, name="logits")(pooled))
    images = rng.uniform(0, 1, size=(8, 6, 6, 3)).astype("float32")
    method = GradCAMPlusPlus("features")
    concurrent = _run_concurrently(lambda i: method(model, images[i : i + 1], i % 3), range(8))
    serial = [method(model, images[i : i + 1], i % 3) for i in range(8)]
    for index, result in enumerate(concurrent):
        np.testing.assert_allclose(result.maps, serial[index % 8].maps, atol=1e-6)


def test_methods_hold_no_per_call_state():
    method = GradCAMPlusPlus("features", normalize_alphas=False)
    with pytest.raises(AttributeError):
        method.last_maps = None  # __slots__: nowhere to keep per-call results
    assert repr(method) == "GradCAMPlusPlus(layer='features', normalize_alphas=False)"
