"""Model architectures and their custom layers."""

from training.architecture import (
    ARCHITECTURES,
    ATTENTION_VARIANTS,
    DEFAULT_TAP_LAYER,
    ArchitectureConfig,
)
from training.models.builders import (
    ATTENTION_LAYER,
    LOGITS_LAYER,
    WeightsUnavailableError,
    attention_maps_model,
    build_from_config,
    build_model,
    with_softmax,
)
from training.models.layers import CaffePreprocess, SoftAttention

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
