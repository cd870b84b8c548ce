"""SoftAttention and CaffePreprocess, checked against explicit computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.models.layers import CaffePreprocess, SoftAttention

RNG = np.random.default_rng(0)


def _built(variant: str, channels: int, size: int = 5, heads: int = 4) -> SoftAttention:
    layer = SoftAttention(heads=heads, variant=variant)
    layer.build((None, size, size, channels))
    # Non-zero bias so the ReLU and the bias path are both exercised.
    layer.bias.assign(RNG.normal(size=heads).astype("float32"))
    return layer


def _softmax_over_positions(logits: np.ndarray) -> np.ndarray:
    b, h, w, m = logits.shape
    flat = logits.reshape(b, h * w, m)
    flat = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (flat / flat.sum(axis=1, keepdims=True)).reshape(b, h, w, m)


def test_paper_variant_equals_an_explicit_3x3_convolution_over_all_channels():
    x = RNG.normal(size=(2, 5, 6, 8)).astype("float32")
    layer = SoftAttention(heads=4, variant="paper")
    layer.build((None, 5, 6, 8))
    layer.bias.assign(RNG.normal(size=4).astype("float32"))
    kernel, bias = (np.asarray(w) for w in (layer.kernel, layer.bias))

    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    logits = np.zeros((2, 5, 6, 4), dtype=np.float64)
    for i in range(5):
        for j in range(6):
            window = padded[:, i : i + 3, j : j + 3, :]  # (B, 3, 3, C)
            logits[:, i, j, :] = np.einsum("bxyc,xyck->bk", window, kernel)
    maps = _softmax_over_positions(np.maximum(logits + bias, 0.0))
    expected_u = x * maps.sum(axis=-1, keepdims=True)

    attended, got_maps = layer(x)
    np.testing.assert_allclose(np.asarray(got_maps), maps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attended), expected_u, rtol=1e-4, atol=1e-5)


def _conv3d_same_by_definition(x: np.ndarray, kernel: np.ndarray, strides: tuple) -> np.ndarray:
    """conv3d with TensorFlow's "same" padding, written out: pad (extra on the far side), slide.

    Written by hand because TF 2.21's CPU conv3d returns wrong values when a stride exceeds the
    kernel's extent (garbage with oneDNN, off by units without): exactly Datta's configuration.
    """
    out_shape, pads = [], []
    for n, k, s in zip(x.shape[1:4], kernel.shape[:3], strides, strict=True):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        out_shape.append(out)
        pads.append((total // 2, total - total // 2))
    padded = np.pad(x, ((0, 0), *pads, (0, 0)))
    result = np.zeros((x.shape[0], *out_shape, kernel.shape[-1]))
    kh, kw, kd = kernel.shape[:3]
    for h in range(out_shape[0]):
        for w in range(out_shape[1]):
            for d in range(out_shape[2]):
                window = padded[
                    :,
                    h * strides[0] : h * strides[0] + kh,
                    w * strides[1] : w * strides[1] + kw,
                    d * strides[2] : d * strides[2] + kd,
                ]
                result[:, h, w, d] = np.einsum("bijkc,ijkcm->bm", window, kernel)
    return result


@pytest.mark.parametrize("channels,size", [(8, 5), (5, 7), (6, 6), (3, 4)])
def test_datta_reference_equals_the_strided_conv3d_of_the_reference_code(channels, size):
    """Datta's code: conv3d(expand_dims(X,-1), kernel (C,3,3,1,m), strides (1,1,C), 'same')."""
    x = RNG.normal(size=(2, size, size, channels)).astype("float32")
    layer = _built("datta-reference", channels, size)
    conv = _conv3d_same_by_definition(x[..., None], np.asarray(layer.kernel), (1, 1, channels))
    assert conv.shape[3] == 1  # a depth stride of C leaves one position along channels
    expected_maps = _softmax_over_positions(
        np.maximum(conv[:, :, :, 0] + np.asarray(layer.bias), 0)
    )
    _, maps = layer(x)
    np.testing.assert_allclose(np.asarray(maps), expected_maps, rtol=1e-4, atol=1e-6)


def test_datta_reference_maps_see_only_channels_zero_to_two():
    layer = _built("datta-reference", channels=2048, size=7, heads=16)
    x = RNG.uniform(0, 4, size=(1, 7, 7, 2048)).astype("float32")
    _, maps = layer(x)

    beyond = x.copy()
    beyond[..., 3:] = RNG.uniform(0, 4, size=beyond[..., 3:].shape)
    _, maps_beyond = layer(beyond)
    np.testing.assert_array_equal(np.asarray(maps), np.asarray(maps_beyond))

    first = x.copy()
    first[..., 0] = RNG.uniform(0, 4, size=first[..., 0].shape)
    _, maps_first = layer(first)
    assert np.abs(np.asarray(maps) - np.asarray(maps_first)).max() > 1e-4


def test_paper_variant_maps_do_see_channels_beyond_two():
    layer = _built("paper", channels=16, size=5)
    x = RNG.uniform(0, 4, size=(1, 5, 5, 16)).astype("float32")
    changed = x.copy()
    changed[..., 3:] = RNG.uniform(0, 4, size=changed[..., 3:].shape)
    assert np.abs(np.asarray(layer(x)[1]) - np.asarray(layer(changed)[1])).max() > 1e-4


@pytest.mark.parametrize("variant", ["paper", "datta-reference"])
def test_both_variants_add_9cm_plus_m_parameters(variant):
    layer = _built(variant, channels=2048, size=7, heads=16)
    assert layer.count_params() == 9 * 2048 * 16 + 16 == 294_928


def test_maps_are_distributions_over_positions_and_aggregate_scales_features():
    layer = _built("paper", channels=8)
    x = RNG.normal(size=(3, 5, 5, 8)).astype("float32")
    attended, maps = layer(x)
    np.testing.assert_allclose(np.asarray(maps).sum(axis=(1, 2)), 1.0, rtol=1e-5)
    scale = np.asarray(maps).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(attended), x * scale, rtol=1e-5, atol=1e-6)


def test_without_aggregation_heads_are_concatenated_along_channels():
    layer = SoftAttention(heads=3, aggregate=False)
    x = RNG.normal(size=(2, 4, 4, 5)).astype("float32")
    attended, maps = layer(x)
    assert attended.shape == (2, 4, 4, 15)
    np.testing.assert_allclose(
        np.asarray(attended)[..., 5:10], x * np.asarray(maps)[..., 1:2], rtol=1e-5, atol=1e-6
    )


def test_config_round_trip_rebuilds_an_identical_layer():
    layer = SoftAttention(heads=5, variant="datta-reference", aggregate=False, name="sa")
    clone = SoftAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.get_config()["variant"] == "datta-reference"


@pytest.mark.parametrize(
    "kwargs,message",
    [({"heads": 0}, "heads"), ({"variant": "v2"}, "variant"), ({"heads": 2.5}, "heads")],
)
def test_bad_arguments_are_refused_when_the_layer_is_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SoftAttention(**kwargs)


def test_caffe_preprocess_matches_keras_resnet50_preprocess_input():
    x = RNG.uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(CaffePreprocess()(x)), expected, rtol=1e-6, atol=1e-4)
