"""Model architectures and their custom layers."""

from training.models.builders import (
    ARCHITECTURES,
    ATTENTION_LAYER,
    DEFAULT_TAP_LAYER,
    LOGITS_LAYER,
    ArchitectureConfig,
    WeightsUnavailableError,
    attention_maps_model,
    build_from_config,
    build_model,
    with_softmax,
)
from training.models.layers import ATTENTION_VARIANTS, CaffePreprocess, SoftAttention

__all__ = [
    "ARCHITECTURES",
    "ATTENTION_LAYER",
    "ATTENTION_VARIANTS",
    "DEFAULT_TAP_LAYER",
    "LOGITS_LAYER",
    "ArchitectureConfig",
    "CaffePreprocess",
    "SoftAttention",
    "WeightsUnavailableError",
    "attention_maps_model",
    "build_from_config",
    "build_model",
    "with_softmax",
]
