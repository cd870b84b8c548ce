"""ResNet-50 classifiers with and without soft attention (paper §3.3), from raw pixels to logits.

One generic builder, :func:`build_from_config`, and the keyword front door :func:`build_model`.
Every layer has a fixed name so Grad-CAM and the attention-map readers can address it:

``pixels`` → ``caffe_preprocess`` → ResNet-50 (Keras names, tapped at ``tap_layer``)
→ head → ``logits``.

Baseline head: ``gap`` → ``logits``.
Attention head: ``soft_attention`` → ``attention_pool``, concatenated (``concat``) with
``features_pool`` → ``head_relu`` → ``head_dropout`` → ``gap`` → ``logits``.

The model outputs logits, because attacks and Grad-CAM need them; :func:`with_softmax` adds the
softmax as a separate final layer for callers that want probabilities.
"""

from __future__ import annotations

from pathlib import Path

import keras

from training.architecture import (
    ARCHITECTURES,
    DEFAULT_TAP_LAYER,
    Architecture,
    ArchitectureConfig,
    AttentionVariant,
)
from training.models.layers import CaffePreprocess, SoftAttention

ATTENTION_LAYER = "soft_attention"
LOGITS_LAYER = "logits"


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were asked for but could not be obtained (no network, no cached file)."""


def build_model(
    architecture: Architecture = "baseline",
    num_classes: int = 2,
    input_size: int = 224,
    weights: str | Path | None = None,
    attention_variant: AttentionVariant = "paper",
    tap_layer: str = DEFAULT_TAP_LAYER,
    attention_heads: int = 16,
    dropout: float = 0.5,
) -> keras.Model:
    """Build a classifier from raw RGB pixels in [0, 255] of shape (input_size, input_size, 3).

    ``weights``: ``None`` (random init), ``"imagenet"`` (Keras downloads or reads its cached
    ResNet-50 "notop" file; raises :class:`WeightsUnavailableError` offline), or the path of a
    local ResNet-50 backbone weights file (``.h5`` / ``.weights.h5``) for machines without network.
    """
    config = ArchitectureConfig(
        architecture=architecture,
        num_classes=num_classes,
        input_size=input_size,
        attention_variant=attention_variant,
        attention_heads=attention_heads,
        tap_layer=tap_layer,
        dropout=dropout,
    )
    return build_from_config(config, weights=weights)


def build_from_config(config: ArchitectureConfig, weights: str | Path | None = None) -> keras.Model:
    """The generic builder behind :func:`build_model`."""
    pixels = keras.Input((config.input_size, config.input_size, 3), name="pixels")
    preprocessed = CaffePreprocess(name="caffe_preprocess")(pixels)
    backbone = _resnet50(preprocessed, weights)
    try:
        features = backbone.get_layer(config.tap_layer).output
    except ValueError as error:
        raise ValueError(
            f"tap_layer {config.tap_layer!r} is not a ResNet-50 layer "
            f"(e.g. 'conv5_block3_out' or 'conv5_block3_add')"
        ) from error

    if config.architecture == "baseline":
        pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    elif config.architecture == "attention":
        attended, _maps = SoftAttention(
            heads=config.attention_heads,
            variant=config.attention_variant,
            aggregate=True,
            name=ATTENTION_LAYER,
        )(features)
        attended = keras.layers.MaxPooling2D(2, padding="same", name="attention_pool")(attended)
        shortcut = keras.layers.MaxPooling2D(2, padding="same", name="features_pool")(features)
        merged = keras.layers.Concatenate(name="concat")([shortcut, attended])
        merged = keras.layers.Activation("relu", name="head_relu")(merged)
        merged = keras.layers.Dropout(config.dropout, name="head_dropout")(merged)
        pooled = keras.layers.GlobalAveragePooling2D(name="gap")(merged)
    else:
        raise ValueError(
            f"architecture must be one of {ARCHITECTURES}, got {config.architecture!r}"
        )

    logits = keras.layers.Dense(config.num_classes, name=LOGITS_LAYER)(pooled)
    return keras.Model(pixels, logits, name=f"resnet50_{config.architecture}")


def _resnet50(preprocessed: keras.KerasTensor, weights: str | Path | None) -> keras.Model:
    """Keras' ResNet-50 without its top, wired onto our tensor so its layers join our graph."""
    if weights is None or weights == "imagenet":
        source = weights
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        source = str(path)
    try:
        return keras.applications.ResNet50(
            include_top=False, weights=source, input_tensor=preprocessed
        )
    except Exception as error:
        if weights != "imagenet":
            raise
        raise WeightsUnavailableError(
            "ImageNet weights for ResNet-50 could not be downloaded "
            f"({type(error).__name__}: {error}). On a machine without network, place "
            "'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5' in ~/.keras/models/ "
            "(or $KERAS_HOME/models/), or pass weights=<path to that file>."
        ) from error


def with_softmax(model: keras.Model) -> keras.Model:
    """The same weights with a final softmax: probabilities instead of logits."""
    probabilities = keras.layers.Activation("softmax", name="probabilities")(model.output)
    return keras.Model(model.input, probabilities, name=f"{model.name}_probabilities")


def attention_maps_model(model: keras.Model) -> keras.Model:
    """pixels → the soft-attention block's m maps ``(B, H, W, m)``; only for attention models."""
    try:
        layer = model.get_layer(ATTENTION_LAYER)
    except ValueError as error:
        raise ValueError(f"model {model.name!r} has no {ATTENTION_LAYER!r} layer") from error
    return keras.Model(model.input, layer.output[1], name=f"{model.name}_attention_maps")
