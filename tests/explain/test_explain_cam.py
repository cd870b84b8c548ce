"""Grad-CAM and Grad-CAM++ against maps computed by hand in numpy on a tiny Keras model.

The model is pixels → 1×1 Conv2D("features", ReLU) → Flatten → Dense("logits"). With a 1×1
kernel the activations are a per-pixel matrix product, and through Flatten → Dense the gradient
of logit k with respect to the activations is the Dense kernel column k reshaped to the map: it
varies over space, so the test exercises the spatial weighting, not only a global average.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.explain import (
    METHODS,
    Explanation,
    GradCAM,
    GradCAMPlusPlus,
    get_method,
    upsample,
)
from training.metrics import softmax

H, W, C_IN, C, K = 4, 5, 3, 6, 3
RNG = np.random.default_rng(7)
CONV_KERNEL = RNG.normal(0.3, 0.5, size=(C_IN, C))
CONV_BIAS = RNG.normal(0.05, 0.1, size=C)
# channel offsets so that, averaged over space, some channels count for and some against a class
CHANNEL_OFFSETS = np.array(
    [[0.5, -0.2, 0.4, -0.2, 0.3, 0.0], [-0.3, 0.4, 0.0, 0.5, -0.4, 0.3], [0] * C]
)
DENSE_KERNEL = RNG.normal(0.0, 0.3, size=(H * W * C, K)) + np.tile(CHANNEL_OFFSETS.T, (H * W, 1))
DENSE_KERNEL[:, 2] = -np.abs(DENSE_KERNEL[:, 2])  # class 2: all evidence negative → zero map
DENSE_BIAS = np.array([0.1, -0.2, 0.0])
PIXELS = RNG.uniform(0.0, 1.0, size=(3, H, W, C_IN)).astype("float32")


def _tiny_model() -> keras.Model:
    pixels = keras.Input((H, W, C_IN), name="pixels")
    features = keras.layers.Conv2D(C, 1, activation="relu", name="features")(pixels)
    flat = keras.layers.Flatten(name="flatten")(features)
    logits = keras.layers.Dense(K, name="logits")(flat)
    model = keras.Model(pixels, logits, name="tiny")
    model.get_layer("features").set_weights([CONV_KERNEL[None, None], CONV_BIAS])
    model.get_layer("logits").set_weights([DENSE_KERNEL, DENSE_BIAS])
    return model


@pytest.fixture(scope="module")
def tiny() -> keras.Model:
    return _tiny_model()


def _numpy_reference(pixels: np.ndarray, classes: np.ndarray, plus_plus: bool):
    activations = np.maximum(pixels.astype(np.float64) @ CONV_KERNEL + CONV_BIAS, 0.0)
    logits = activations.reshape(len(pixels), -1) @ DENSE_KERNEL + DENSE_BIAS
    grads = DENSE_KERNEL[:, classes].T.reshape(len(pixels), H, W, C)
    if plus_plus:
        sum_a = activations.sum(axis=(1, 2), keepdims=True)
        denominator = 2 * grads**2 + sum_a * grads**3
        alphas = np.where(
            denominator != 0, grads**2 / np.where(denominator != 0, denominator, 1), 0
        )
        alphas = alphas / alphas.sum(axis=(1, 2), keepdims=True)
        weights = (alphas * np.maximum(grads, 0)).sum(axis=(1, 2))
    else:
        weights = grads.mean(axis=(1, 2))
    cam = np.maximum(np.einsum("bhwc,bc->bhw", activations, weights), 0)
    peaks = cam.max(axis=(1, 2), keepdims=True)
    return cam / np.where(peaks > 0, peaks, 1), logits


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus])
def test_matches_hand_computed_map(tiny, method):
    classes = np.array([0, 1, 0])
    explanation = method("features")(tiny, PIXELS, classes)
    expected, logits = _numpy_reference(PIXELS, classes, method is GradCAMPlusPlus)
    assert isinstance(explanation, Explanation)
    assert explanation.maps.shape == (3, H, W) and explanation.maps.dtype == np.float32
    np.testing.assert_allclose(explanation.maps, expected, atol=1e-5)
    np.testing.assert_allclose(explanation.logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(explanation.probabilities, softmax(logits), atol=1e-6)
    np.testing.assert_array_equal(explanation.class_indices, classes)
    assert explanation.layer == "features" and explanation.method == method.name
    np.testing.assert_allclose(explanation.maps.max(axis=(1, 2)), 1.0, atol=1e-6)
    # the spatially varying gradients make a real map, not a constant
    assert all(np.unique(m).size > 5 for m in explanation.maps)


def test_default_class_is_the_prediction_and_an_int_applies_to_all(tiny):
    _, logits = _numpy_reference(PIXELS, np.zeros(3, dtype=int), plus_plus=False)
    predicted = GradCAM("features")(tiny, PIXELS)
    np.testing.assert_array_equal(predicted.class_indices, logits.argmax(axis=1))
    every = GradCAM("features")(tiny, PIXELS, 1)
    np.testing.assert_array_equal(every.class_indices, [1, 1, 1])


def test_all_negative_evidence_gives_an_all_zero_map_not_nan(tiny):
    for method in (GradCAM("features"), GradCAMPlusPlus("features")):
        explanation = method(tiny, PIXELS, 2)
        assert np.all(explanation.maps == 0.0)
        assert np.all(explanation.peaks == 0.0)


def test_single_image_and_input_validation(tiny):
    single = GradCAM("features")(tiny, PIXELS[0], 0)
    assert single.maps.shape == (1, H, W)
    with pytest.raises(ValueError, match="class_indices must lie in"):
        GradCAM("features")(tiny, PIXELS, 3)
    with pytest.raises(ValueError, match="one int or 3 ints"):
        GradCAM("features")(tiny, PIXELS, [0, 1])
    with pytest.raises(ValueError):
        GradCAM("no_such_layer")(tiny, PIXELS)
    with pytest.raises(ValueError, match="feature map"):
        GradCAM("flatten")(tiny, PIXELS, 0)


def test_gradcam_plus_plus_without_alpha_normalisation_is_the_printed_equation(tiny):
    classes = np.array([0, 1, 0])
    explanation = GradCAMPlusPlus("features", normalize_alphas=False)(tiny, PIXELS, classes)
    activations = np.maximum(PIXELS.astype(np.float64) @ CONV_KERNEL + CONV_BIAS, 0.0)
    grads = DENSE_KERNEL[:, classes].T.reshape(3, H, W, C)
    alphas = grads**2 / (2 * grads**2 + activations.sum(axis=(1, 2), keepdims=True) * grads**3)
    weights = (alphas * np.maximum(grads, 0)).sum(axis=(1, 2))
    cam = np.maximum(np.einsum("bhwc,bc->bhw", activations, weights), 0)
    np.testing.assert_allclose(
        explanation.maps, cam / cam.max(axis=(1, 2), keepdims=True), atol=1e-5
    )


def test_upsample_sizes_and_values():
    maps = np.array([[[0.0, 1.0], [0.5, 0.25]], [[1.0, 1.0], [1.0, 1.0]]], dtype=np.float32)
    big = upsample(maps, 8)
    assert big.shape == (2, 8, 8) and big.dtype == np.float32
    assert big.min() >= 0.0 and big.max() <= 1.0
    np.testing.assert_allclose(big[1], 1.0)
    assert upsample(maps[0], (3, 7)).shape == (3, 7)
    np.testing.assert_array_equal(upsample(maps, (2, 2)), maps)
    explanation_like = upsample(maps, (16, 12))
    assert explanation_like.shape == (2, 16, 12)
    with pytest.raises(ValueError):
        upsample(np.zeros((2, 2, 2, 2)), 4)


def test_methods_registry():
    assert set(METHODS) == {"gradcam", "gradcam++"}
    assert isinstance(get_method("gradcam++", "features"), GradCAMPlusPlus)
    assert get_method("gradcam").layer == "conv5_block3_out"
    with pytest.raises(ValueError, match="unknown CAM method"):
        get_method("scorecam")
