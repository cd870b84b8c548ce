"""Heatmaps drawn over the image they explain, and PNG encoding for reports and the service.

Everything here is RGB: OpenCV's colormaps and encoder work in BGR, so the conversions happen
inside these functions and callers never see BGR.
"""

from __future__ import annotations

import cv2
import numpy as np

_COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_") :].lower(): getattr(cv2, name)
    for name in dir(cv2)
    if name.startswith("COLORMAP_")
}


def colormap_names() -> list[str]:
    """Names accepted by :func:`overlay` (OpenCV's colormaps, lower case: "jet", "viridis"...)."""
    return sorted(_COLORMAPS)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet"
) -> np.ndarray:
    """Blend a colour-mapped ``heatmap`` over ``image``; RGB uint8 at the image's resolution.

    ``image``: ``(H, W, 3)`` RGB or ``(H, W)`` / ``(H, W, 1)`` grey; uint8, or any real dtype in
    [0, 255] (clipped and rounded, e.g. the float pixels a model takes). ``heatmap``: ``(h, w)``
    in [0, 1] at any resolution; it is resized bilinearly to ``(H, W)``. The result is
    ``(1 - alpha) · image + alpha · colour``, so ``alpha=0`` returns the image (as RGB).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    try:
        code = _COLORMAPS[colormap.lower()]
    except KeyError:
        raise ValueError(
            f"unknown colormap {colormap!r}; choose one of {colormap_names()}"
        ) from None
    rgb = _as_rgb_uint8(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be (h, w), got shape {heat.shape}")
    height, width = rgb.shape[:2]
    resized = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(np.nan_to_num(resized, nan=0.0), 0.0, 1.0)
    coloured = cv2.applyColorMap(np.round(heat * 255.0).astype(np.uint8), code)
    coloured = cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * coloured.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` RGB or ``(H, W)`` grey image as PNG bytes (lossless)."""
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float64)), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grey, got shape {array.shape}")
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as PNG")
    return encoded.tobytes()


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float64)), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[-1] == 3:
        return array
    raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grey, got shape {array.shape}")
