"""Pixel preparation: the chest x-ray filter against a hand computation, resizing, channels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.preprocess import (
    PreprocessConfig,
    chest_xray_edge_filter,
    decode_image_bytes,
    prepare_image,
    read_image,
    to_rgb,
)

RNG = np.random.default_rng(3)


def _gaussian_blur_by_hand(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian with OpenCV's kernel-size rule for float images (2·round(4σ)+1) and its
    default border (reflect-101, numpy's "reflect")."""
    radius = int(round(4 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(offsets**2) / (2 * sigma**2))
    weights /= weights.sum()
    padded = np.pad(image.astype(np.float64), radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, weights, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, weights, mode="valid"), 0, rows)


def test_edge_filter_matches_the_papers_formula_computed_by_hand():
    image = RNG.integers(30, 200, size=(190, 210)).astype(np.uint16) * 7  # not in [0, 255]
    x = image.astype(np.float64)
    x = (x - x.min()) * 255.0 / (x.max() - x.min())
    expected = np.clip(4 * x - 4 * _gaussian_blur_by_hand(x, 20.0) + 128, 0, 255)

    got = chest_xray_edge_filter(image)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert got.min() >= 0 and got.max() <= 255


def test_edge_filter_of_a_flat_image_is_mid_grey_rather_than_a_division_by_zero():
    np.testing.assert_array_equal(chest_xray_edge_filter(np.full((50, 50), 9, np.uint8)), 128.0)


def test_prepare_image_resizes_and_makes_three_equal_channels_from_gray():
    gray = RNG.integers(0, 256, size=(150, 200), dtype=np.uint8)
    out = prepare_image(gray, PreprocessConfig(input_size=64))
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    expected = cv2.resize(gray.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(out[..., 1], expected)


def test_prepare_image_applies_the_edge_filter_before_resizing():
    gray = RNG.integers(0, 256, size=(120, 120), dtype=np.uint8)
    out = prepare_image(gray, PreprocessConfig(input_size=60, edge_filter=True))
    expected = cv2.resize(chest_xray_edge_filter(gray), (60, 60), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 5), (5, 5, 1), (5, 5, 3), (5, 5, 4)])
def test_to_rgb_accepts_gray_rgb_and_rgba(shape):
    assert to_rgb(np.zeros(shape, np.uint8)).shape == (5, 5, 3)


def test_to_rgb_refuses_other_channel_counts():
    with pytest.raises(ValueError, match="channels"):
        to_rgb(np.zeros((5, 5, 2), np.uint8))


def test_read_image_returns_rgb_and_scales_16_bit(tmp_path):
    rgb = RNG.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(str(tmp_path / "c.png")), rgb)
    deep = np.full((4, 4), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    assert read_image(str(tmp_path / "d.png")).max() == 255


def test_unreadable_bytes_are_named_in_the_error(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(str(path))
    with pytest.raises(ValueError, match="upload"):
        decode_image_bytes(b"", source="upload")
