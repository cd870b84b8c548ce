"""Soft-attention maps: shape, per-head softmax, aggregation, and a clear refusal for baselines."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.explain import aggregate_heads, aggregated_attention, attention_maps, has_attention
from training.models import build_model

SIZE, HEADS = 64, 4  # 64 px → a 2×2 conv5 map
PIXELS = np.random.default_rng(3).uniform(0, 255, size=(3, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def attention_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return build_model("attention", num_classes=2, input_size=SIZE, attention_heads=HEADS)


def test_maps_shape_and_each_head_is_a_softmax_over_positions(attention_model):
    maps = attention_maps(attention_model, PIXELS)
    assert maps.shape == (3, 2, 2, HEADS) and maps.dtype == np.float32
    assert np.all(maps >= 0)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
    reference = keras.Model(
        attention_model.input, attention_model.get_layer("soft_attention").output[1]
    )
    np.testing.assert_allclose(maps, np.asarray(reference(PIXELS)), atol=1e-6)
    assert attention_maps(attention_model, PIXELS[0]).shape == (1, 2, 2, HEADS)


def test_aggregation_sums_heads_and_normalises_per_image(attention_model):
    maps = attention_maps(attention_model, PIXELS)
    aggregated = aggregated_attention(attention_model, PIXELS)
    assert aggregated.shape == (3, 2, 2) and aggregated.dtype == np.float32
    total = maps.sum(axis=-1)
    np.testing.assert_allclose(aggregated, total / total.max(axis=(1, 2), keepdims=True), atol=1e-6)
    np.testing.assert_allclose(aggregated.max(axis=(1, 2)), 1.0, atol=1e-6)


def test_aggregate_heads_by_hand():
    maps = np.zeros((2, 2, 3, 2), dtype=np.float32)
    maps[0, 0, 0] = [1.0, 0.0]
    maps[0, 1, 2] = [0.5, 1.0]  # sum 1.5 is the maximum
    expected = np.zeros((2, 2, 3), dtype=np.float32)
    expected[0, 0, 0], expected[0, 1, 2] = 1 / 1.5, 1.0
    np.testing.assert_allclose(aggregate_heads(maps), expected)  # image 1: all zero stays zero
    with pytest.raises(ValueError):
        aggregate_heads(np.zeros((2, 2, 3)))


def test_baseline_is_refused_with_a_clear_error():
    baseline = build_model("baseline", num_classes=2, input_size=32)
    assert not has_attention(baseline)
    with pytest.raises(ValueError, match="architecture='attention'.*Grad-CAM"):
        attention_maps(baseline, PIXELS[:, :32, :32])
    with pytest.raises(ValueError, match="soft_attention"):
        aggregated_attention(baseline, PIXELS[:, :32, :32])
