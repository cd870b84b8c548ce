"""How much an explanation moved: clean-vs-adversarial map comparison, and lesion-mask scores.

All metrics are vectorised over a batch of ``(B, h, w)`` maps (a single ``(h, w)`` map gives a
scalar) and are invariant to each map's scale, so raw and normalised maps give the same numbers.

* Pearson correlation of the two maps' pixels: global agreement of the pattern.
* IoU of the top-``fraction`` regions (threshold at each map's ``1 - fraction`` quantile): do the
  most salient areas still overlap?
* Centre-of-mass shift, in map pixels and as a fraction of the map diagonal ``sqrt(h² + w²)``
  (resolution-free, so maps of different layers compare).

Undefined values (a constant map has no correlation and no top region, an all-zero map no centre
of mass) are NaN
in arrays and ``None`` in the pydantic records, and :func:`aggregate` skips them.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.explain.cam import upsample

DEFAULT_TOP_FRACTION = 0.2


class MapComparison(BaseModel):
    """One image's clean-vs-adversarial map comparison."""

    model_config = ConfigDict(frozen=True)

    pearson: float | None
    top_iou: float | None
    shift_px: float | None
    shift_fraction: float | None
    top_fraction: float = Field(DEFAULT_TOP_FRACTION, gt=0.0, le=1.0)


class MetricSummary(BaseModel):
    """Mean, median and population standard deviation of one metric over its defined values."""

    model_config = ConfigDict(frozen=True)

    count: int
    mean: float | None = None
    median: float | None = None
    std: float | None = None


class MapComparisonSummary(BaseModel):
    """:func:`aggregate` of many :class:`MapComparison`; ``n`` counts all, ``count`` the defined."""

    model_config = ConfigDict(frozen=True)

    n: int
    pearson: MetricSummary
    top_iou: MetricSummary
    shift_px: MetricSummary
    shift_fraction: MetricSummary


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Pearson correlation per map pair; NaN where either map is constant."""
    x, y, single = _pair(a, b)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    y = y - y.mean(axis=(1, 2), keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=(1, 2)) * (y * y).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denominator > 0.0, (x * y).sum(axis=(1, 2)) / denominator, np.nan)
    return _out(np.clip(r, -1.0, 1.0), single)


def top_region_mask(maps: np.ndarray, fraction: float = DEFAULT_TOP_FRACTION) -> np.ndarray:
    """Boolean masks of each map's top ``fraction``: pixels at or above its ``1-fraction`` quantile.

    Ties at the threshold are all included, but a map's minimum value never is: a ReLU'd CAM is
    often mostly zeros, and when the quantile falls on that floor the "top region" is the
    positive part (smaller than ``fraction``), not the whole map. A constant map's mask is empty.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    array, single = _batch(maps)
    flat = array.reshape(len(array), -1)
    threshold = np.quantile(flat, 1.0 - fraction, axis=1)
    mask = (array >= threshold[:, None, None]) & (array > flat.min(axis=1)[:, None, None])
    return mask[0] if single else mask


def top_region_iou(
    a: np.ndarray, b: np.ndarray, fraction: float = DEFAULT_TOP_FRACTION
) -> np.ndarray | float:
    """Intersection over union of the two maps' top-``fraction`` regions; NaN if both are empty."""
    x, y, single = _pair(a, b)
    mask_a, mask_b = top_region_mask(x, fraction), top_region_mask(y, fraction)
    intersection = (mask_a & mask_b).sum(axis=(1, 2))
    union = (mask_a | mask_b).sum(axis=(1, 2))  # 0 only when both maps are constant
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    return _out(iou, single)


def centre_of_mass(maps: np.ndarray) -> np.ndarray:
    """``(B, 2)`` (row, column) centres of mass in pixel indices; negatives count as 0; NaN if 0."""
    array, single = _batch(maps)
    weights = np.maximum(array, 0.0)
    total = weights.sum(axis=(1, 2))
    rows = np.arange(array.shape[1], dtype=np.float64)
    cols = np.arange(array.shape[2], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        row = np.where(total > 0, (weights.sum(axis=2) * rows).sum(axis=1) / total, np.nan)
        col = np.where(total > 0, (weights.sum(axis=1) * cols).sum(axis=1) / total, np.nan)
    centres = np.stack([row, col], axis=1)
    return centres[0] if single else centres


def centre_of_mass_shift(
    a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(shift in map pixels, shift / map diagonal) between the two maps' centres of mass."""
    x, y, single = _pair(a, b)
    delta = centre_of_mass(y) - centre_of_mass(x)
    shift = np.hypot(delta[:, 0], delta[:, 1])
    diagonal = float(np.hypot(x.shape[1], x.shape[2]))
    return _out(shift, single), _out(shift / diagonal, single)


def compare_maps(
    clean: np.ndarray, adversarial: np.ndarray, top_fraction: float = DEFAULT_TOP_FRACTION
) -> list[MapComparison]:
    """All comparison metrics for each (clean, adversarial) map pair of a batch."""
    x, y, _ = _pair(clean, adversarial)
    r = np.atleast_1d(pearson(x, y))
    iou = np.atleast_1d(top_region_iou(x, y, top_fraction))
    shift, fraction = (np.atleast_1d(v) for v in centre_of_mass_shift(x, y))
    return [
        MapComparison(
            pearson=_optional(r[i]),
            top_iou=_optional(iou[i]),
            shift_px=_optional(shift[i]),
            shift_fraction=_optional(fraction[i]),
            top_fraction=top_fraction,
        )
        for i in range(len(x))
    ]


def aggregate(comparisons: Sequence[MapComparison]) -> MapComparisonSummary:
    """Mean / median / std of each metric over many comparisons, skipping undefined values."""
    return MapComparisonSummary(
        n=len(comparisons),
        **{
            field: _summary([getattr(c, field) for c in comparisons])
            for field in ("pearson", "top_iou", "shift_px", "shift_fraction")
        },
    )


def energy_inside(maps: np.ndarray, masks: np.ndarray) -> np.ndarray | float:
    """Share of heatmap energy inside a binary mask (e.g. a lesion segmentation).

    Each map is upsampled bilinearly to its mask's size first; negatives count as 0. NaN for an
    all-zero map. ``maps`` ``(B, h, w)`` with ``masks`` ``(B, H, W)``, or one of each.
    """
    heat, mask, single = _maps_and_masks(maps, masks)
    total = heat.sum(axis=(1, 2))
    inside = (heat * mask).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, inside / total, np.nan)
    return _out(share, single)


def pointing_game(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> np.ndarray | bool:
    """Whether each map's maximum (after upsampling to the mask size) falls inside the mask.

    ``tolerance`` (pixels of the mask) counts a maximum within that distance of the mask as a
    hit, as in Zhang et al.'s pointing game (they use 15 px at 224 px). An all-zero map has no
    maximum and misses. Ties go to the first maximum in row-major order.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    heat, mask, single = _maps_and_masks(maps, masks)
    if tolerance > 0:
        kernel = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1)
        )
        mask = np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in mask])
    flat = heat.reshape(len(heat), -1)
    best = flat.argmax(axis=1)
    hits = mask.reshape(len(mask), -1)[np.arange(len(mask)), best] & (flat.max(axis=1) > 0)
    return bool(hits[0]) if single else hits


def _batch(maps: np.ndarray) -> tuple[np.ndarray, bool]:
    array = np.asarray(maps, dtype=np.float64)
    if array.ndim == 2:
        return array[None], True
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"maps must be non-empty (B, h, w) or (h, w), got shape {array.shape}")
    return array, False


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    x, single_a = _batch(a)
    y, single_b = _batch(b)
    if x.shape != y.shape:
        raise ValueError(f"maps to compare must have the same shape, got {x.shape} and {y.shape}")
    return x, y, single_a and single_b


def _maps_and_masks(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    heat, single = _batch(maps)
    mask = np.asarray(masks)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or len(mask) != len(heat):
        raise ValueError(
            f"masks must be (B, H, W) matching {len(heat)} maps, got shape {np.shape(masks)}"
        )
    upsampled = np.maximum(upsample(heat, mask.shape[1:]).astype(np.float64), 0.0)
    return upsampled, mask > 0, single


def _out(values: np.ndarray, single: bool) -> np.ndarray | float:
    return float(values[0]) if single else values


def _optional(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _summary(values: list[float | None]) -> MetricSummary:
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    if len(defined) == 0:
        return MetricSummary(count=0)
    return MetricSummary(
        count=len(defined),
        mean=float(defined.mean()),
        median=float(np.median(defined)),
        std=float(defined.std()),
    )
