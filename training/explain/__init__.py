"""Explanations: Grad-CAM / Grad-CAM++, soft-attention maps, overlays and map comparisons.

All gradients go through :mod:`training.gradients`, so this package runs on the TensorFlow and
the JAX Keras backend; every object here is stateless and safe to share between threads.
"""

from training.explain.attention import (
    aggregate_heads,
    aggregated_attention,
    attention_maps,
    has_attention,
)
from training.explain.cam import (
    METHODS,
    CAMMethod,
    Explanation,
    GradCAM,
    GradCAMPlusPlus,
    get_method,
    upsample,
)
from training.explain.compare import (
    DEFAULT_TOP_FRACTION,
    MapComparison,
    MapComparisonSummary,
    MetricSummary,
    aggregate,
    centre_of_mass,
    centre_of_mass_shift,
    compare_maps,
    energy_inside,
    pearson,
    pointing_game,
    top_region_iou,
    top_region_mask,
)
from training.explain.overlay import colormap_names, overlay, png_bytes

__all__ = [
    "DEFAULT_TOP_FRACTION",
    "METHODS",
    "CAMMethod",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "MapComparison",
    "MapComparisonSummary",
    "MetricSummary",
    "aggregate",
    "aggregate_heads",
    "aggregated_attention",
    "attention_maps",
    "centre_of_mass",
    "centre_of_mass_shift",
    "colormap_names",
    "compare_maps",
    "energy_inside",
    "get_method",
    "has_attention",
    "overlay",
    "pearson",
    "png_bytes",
    "pointing_game",
    "top_region_iou",
    "top_region_mask",
    "upsample",
]
