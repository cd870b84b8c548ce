"""Overlays keep the image's size and dtype, alpha=0 is the image, and PNGs round-trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.explain import colormap_names, overlay, png_bytes

RNG = np.random.default_rng(5)
IMAGE = RNG.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
HEATMAP = RNG.uniform(0, 1, size=(4, 7)).astype(np.float32)


def test_output_is_rgb_uint8_at_image_resolution():
    out = overlay(IMAGE, HEATMAP)
    assert out.shape == IMAGE.shape and out.dtype == np.uint8
    grey = overlay(IMAGE[..., 0], HEATMAP, colormap="viridis")
    assert grey.shape == (40, 56, 3) and grey.dtype == np.uint8
    assert overlay(IMAGE[..., :1], HEATMAP).shape == (40, 56, 3)


def test_alpha_zero_returns_the_image_and_alpha_one_the_colour_map():
    np.testing.assert_array_equal(overlay(IMAGE, HEATMAP, alpha=0.0), IMAGE)
    grey = IMAGE[..., 1]
    np.testing.assert_array_equal(overlay(grey, HEATMAP, alpha=0.0), np.stack([grey] * 3, -1))
    hot = overlay(IMAGE, np.ones((2, 2)), alpha=1.0)  # jet at 1.0 is dark red in RGB
    np.testing.assert_array_equal(hot, np.broadcast_to(hot[0, 0], hot.shape))
    assert hot[0, 0, 0] > 100 and hot[0, 0, 2] == 0


def test_blend_is_the_alpha_mix_in_rgb():
    colour = cv2.cvtColor(
        cv2.applyColorMap(np.zeros((40, 56), np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    out = overlay(IMAGE, np.zeros((3, 3)), alpha=0.4)
    expected = np.round(0.6 * IMAGE.astype(np.float32) + 0.4 * colour.astype(np.float32))
    np.testing.assert_allclose(out, expected, atol=1)


def test_float_pixels_are_accepted_and_bad_arguments_rejected():
    out = overlay(IMAGE.astype(np.float32), HEATMAP, alpha=0.0)
    np.testing.assert_array_equal(out, IMAGE)
    with pytest.raises(ValueError, match="alpha"):
        overlay(IMAGE, HEATMAP, alpha=1.5)
    with pytest.raises(ValueError, match="colormap"):
        overlay(IMAGE, HEATMAP, colormap="rainbow-unicorn")
    with pytest.raises(ValueError, match="heatmap"):
        overlay(IMAGE, HEATMAP[None])
    assert "jet" in colormap_names() and "viridis" in colormap_names()


def test_png_round_trip_keeps_rgb_order():
    encoded = png_bytes(IMAGE)
    assert isinstance(encoded, bytes) and encoded[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), IMAGE)
    grey = png_bytes(IMAGE[..., 0])
    decoded_grey = cv2.imdecode(np.frombuffer(grey, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded_grey, IMAGE[..., 0])
    with pytest.raises(ValueError):
        png_bytes(np.zeros((2, 2, 2, 3), np.uint8))
