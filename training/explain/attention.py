"""The soft-attention block's own maps: what the attention model looks at, without gradients.

The attention model's ``soft_attention`` layer computes m softmax maps over the positions of
``conv5_block3_out``; reading them needs only a forward pass. The paper aggregates the heads by
summing them (the same sum that scales the features), so :func:`aggregate_heads` does that and
normalises per image to [0, 1] for display and comparison with Grad-CAM maps.
"""

from __future__ import annotations

import threading

import keras
import numpy as np

from training import gradients
from training.models.builders import ATTENTION_LAYER, attention_maps_model

# One pixels → maps model per classifier (kept on it by gradients.cached), so its compiled
# forward pass is reused; the lock keeps it one per classifier under concurrent calls.
_lock = threading.Lock()


def has_attention(model: keras.Model) -> bool:
    """Whether ``model`` has the soft-attention layer (i.e. was built as ``"attention"``)."""
    return any(layer.name == ATTENTION_LAYER for layer in model.layers)


def attention_maps(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """The m per-head maps ``(B, H, W, m)`` float32 of an attention model; each sums to 1.

    Raises ``ValueError`` for models without soft attention (the baseline): use Grad-CAM there.
    """
    batch = np.asarray(pixels, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4:
        raise ValueError(f"pixels must be (B, H, W, C) or (H, W, C), got shape {batch.shape}")
    return gradients.logits(_maps_model(model), batch).astype(np.float32)


def aggregate_heads(maps: np.ndarray) -> np.ndarray:
    """Sum ``(B, H, W, m)`` head maps over heads and divide each image by its maximum → [0, 1]."""
    array = np.asarray(maps, dtype=np.float64)
    if array.ndim != 4:
        raise ValueError(f"maps must be (B, H, W, m), got shape {array.shape}")
    total = array.sum(axis=-1)
    peaks = total.max(axis=(1, 2), keepdims=True)
    return (total / np.where(peaks > 0.0, peaks, 1.0)).astype(np.float32)


def aggregated_attention(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """The aggregated attention map ``(B, H, W)`` in [0, 1]: :func:`aggregate_heads` of the maps."""
    return aggregate_heads(attention_maps(model, pixels))


def _maps_model(model: keras.Model) -> keras.Model:
    if not has_attention(model):
        raise ValueError(
            f"model {model.name!r} has no {ATTENTION_LAYER!r} layer: attention maps exist only "
            "for models built with architecture='attention'; explain baseline models with "
            "Grad-CAM / Grad-CAM++ instead"
        )
    with _lock:
        return gradients.cached(model, "attention_maps_model", lambda: attention_maps_model(model))
