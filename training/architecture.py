"""What a model's graph is made of, as plain data: stored in every manifest.

Keras-free on purpose, so reading a model store's manifests (the API's job submission, the DIMSE
listener, ``medrobust models list``) does not load the ML stack; :mod:`training.models.builders`
turns an :class:`ArchitectureConfig` into a Keras model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Architecture = Literal["baseline", "attention"]
ARCHITECTURES: tuple[str, ...] = ("baseline", "attention")
AttentionVariant = Literal["paper", "datta-reference"]
ATTENTION_VARIANTS: tuple[str, ...] = ("paper", "datta-reference")
#: the ResNet-50 block both architectures tap (attention input, default Grad-CAM layer)
DEFAULT_TAP_LAYER = "conv5_block3_out"


class ArchitectureConfig(BaseModel):
    """Everything needed to rebuild a model's graph; stored with each trained artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Architecture = "baseline"
    num_classes: int = Field(2, ge=2)
    input_size: int = Field(224, ge=32, le=1024)
    attention_variant: AttentionVariant = "paper"
    attention_heads: int = Field(16, ge=1)
    tap_layer: str = DEFAULT_TAP_LAYER
    dropout: float = Field(0.5, ge=0.0, lt=1.0)

    @field_validator("attention_variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        if value not in ATTENTION_VARIANTS:
            raise ValueError(f"attention_variant must be one of {ATTENTION_VARIANTS}")
        return value
