"""Distances in pixel space and an exact "inside the ball" guarantee for float32 images.

An attack projects onto the ε-ball in float32, so ``x + δ`` can land a rounding error (about
half a float32 ulp, ≤ 7.7e-6 for pixels in [128, 256)) outside it. A reported upper bound must
hold exactly, so :func:`into_ball` moves such coordinates the last ulp towards ``x`` until the
distance, computed in float64, is ≤ ε.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Norm = Literal["inf", "2"]


def distance(x: np.ndarray, other: np.ndarray, norm: Norm) -> float:
    """‖other − x‖ in pixel units, in float64 (L2 over all ``H·W·C`` values)."""
    delta = np.asarray(other, np.float64) - np.asarray(x, np.float64)
    if norm == "inf":
        return float(np.max(np.abs(delta))) if delta.size else 0.0
    return float(np.sqrt(np.sum(delta * delta)))


def into_ball(
    x: np.ndarray,
    candidate: np.ndarray,
    epsilon: float,
    norm: Norm,
    clip: tuple[float, float] = (0.0, 255.0),
) -> np.ndarray:
    """``candidate`` (float32, same shape as ``x``) moved into the closed ε-ball around ``x``.

    The projection is done in float64 (L∞: clip δ; L2: rescale δ); the float32 result is then
    nudged one ulp towards ``x`` per offending coordinate (L∞) or everywhere (L2) until the
    float64 distance is ≤ ε. Each nudge strictly shrinks |δ| of the coordinates it touches, and
    ``x`` itself is always inside, so the loop ends (in one or two passes in practice).
    """
    x32 = np.asarray(x, np.float32)
    delta = np.asarray(candidate, np.float64) - x32.astype(np.float64)
    if norm == "inf":
        delta = np.clip(delta, -epsilon, epsilon)
    else:
        length = float(np.sqrt(np.sum(delta * delta)))
        if length > epsilon:
            delta *= epsilon / length
    moved = np.clip(x32.astype(np.float64) + delta, *clip).astype(np.float32)
    while distance(x32, moved, norm) > epsilon:
        gap = np.abs(moved.astype(np.float64) - x32.astype(np.float64))
        offending = gap > epsilon if norm == "inf" else gap > 0
        moved = np.where(offending, np.nextafter(moved, x32), moved)
    return moved
