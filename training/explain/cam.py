"""Gradient-weighted class activation maps: Grad-CAM and Grad-CAM++.

Both methods share everything but one step: they take the activations ``A`` of a convolutional
layer and the gradient of a class score with respect to them, turn the pair into one weight per
channel, and map ``ReLU(Σ_c w_c A_c)``. :class:`CAMMethod` therefore owns the forward/backward
pass and the post-processing; a subclass overrides only :meth:`CAMMethod.weights`.

Every gradient goes through :mod:`training.gradients` (never a ``GradientTape`` here), so the
same code runs on the TensorFlow and the JAX Keras backend.

Instances are stateless: they hold only their immutable configuration (layer name, options) and
keep nothing per call, so one instance can serve concurrent requests from several threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import cv2
import keras
import numpy as np

from training import gradients
from training.architecture import DEFAULT_TAP_LAYER
from training.metrics import softmax

ClassSelection = int | Sequence[int] | np.ndarray | None
Size = int | tuple[int, int]


@dataclass(frozen=True)
class Explanation:
    """The result of explaining a batch of images.

    ``maps`` are ``(B, h, w)`` float32 at the layer's resolution, each divided by its own maximum
    so it spans [0, 1]; a map with no positive evidence stays all zero (its ``peaks`` entry is 0).
    ``peaks`` keeps the per-image maximum before that division, so callers can tell a strong map
    from a weak one after normalisation has hidden the scale.
    """

    maps: np.ndarray
    class_indices: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    peaks: np.ndarray
    layer: str
    method: str

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def upsampled(self, size: Size) -> np.ndarray:
        """The maps resized to ``size`` (e.g. the input resolution), see :func:`upsample`."""
        return upsample(self.maps, size)


class CAMMethod(ABC):
    """Forward pass, class choice, backward pass and normalisation shared by CAM methods.

    ``layer`` names the convolutional layer to explain; the default ``conv5_block3_out`` is the
    last ResNet-50 block in both architectures, so baseline and attention maps are comparable.
    """

    name: ClassVar[str] = "cam"
    __slots__ = ("_layer",)

    def __init__(self, layer: str = DEFAULT_TAP_LAYER) -> None:
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a non-empty layer name, got {layer!r}")
        self._layer = layer

    @property
    def layer(self) -> str:
        return self._layer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self._layer!r})"

    @abstractmethod
    def weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """Per-channel weights ``(B, C)`` from activations and dScore/dA, both ``(B, h, w, C)``."""

    def explain(
        self, model: keras.Model, pixels: np.ndarray, class_indices: ClassSelection = None
    ) -> Explanation:
        """Explain ``pixels`` (``(B, H, W, 3)`` or one ``(H, W, 3)`` image, raw [0, 255]).

        ``class_indices``: ``None`` explains each image's predicted class; an int explains that
        class for every image; a sequence gives one class per image.
        """
        batch = _as_batch(pixels)
        num_classes = int(model.output.shape[-1])
        requested = None
        if class_indices is not None:
            requested = _class_array(class_indices, len(batch), num_classes)
        activations, grads, logits, classes = gradients.layer_activations_and_gradients(
            model, self._layer, batch, requested
        )
        if activations.ndim != 4:
            raise ValueError(
                f"layer {self._layer!r} outputs shape {activations.shape}; a CAM needs a "
                "(batch, height, width, channels) feature map"
            )
        # float64: Grad-CAM++ raises gradients to the third power, which underflows in float32.
        a64, g64 = activations.astype(np.float64), grads.astype(np.float64)
        channel_weights = np.asarray(self.weights(a64, g64), dtype=np.float64)
        if channel_weights.shape != (a64.shape[0], a64.shape[-1]):
            raise ValueError(
                f"{type(self).__name__}.weights returned shape {channel_weights.shape}, "
                f"expected {(a64.shape[0], a64.shape[-1])}"
            )
        raw = np.maximum(np.einsum("bhwc,bc->bhw", a64, channel_weights), 0.0)
        maps, peaks = _normalise(raw)
        return Explanation(
            maps=maps,
            class_indices=classes.astype(np.int64),
            logits=logits.astype(np.float32),
            probabilities=softmax(logits),
            peaks=peaks,
            layer=self._layer,
            method=self.name,
        )

    __call__ = explain


class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al., 2017): ``w_c`` = spatial mean of dScore/dA_c."""

    name: ClassVar[str] = "gradcam"
    __slots__ = ()

    def weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradients.mean(axis=(1, 2))


class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ (Chattopadhay et al., 2018) in its closed form from first-order gradients.

    With ``Y = exp(S)`` the paper's higher derivatives become powers of ``g = dS/dA``:
    ``α_ij = g² / (2 g² + Σ_ab A_ab · g³)`` and ``w_c = Σ_ij α_ij · ReLU(exp(S) g)``. The common
    factor ``exp(S)`` cancels in ``α`` and only rescales each image's map, which the
    normalisation removes, so it is left out: that avoids overflow for large logits and gives the
    same normalised map as the authors' code and tf-keras-vis. Where ``g = 0`` (or the
    denominator vanishes) ``α = 0``.

    ``normalize_alphas`` (default ``True``) divides ``α`` by its spatial sum per channel, as the
    authors' released code and tf-keras-vis do; ``False`` gives the paper's equation as printed
    (as in pytorch-grad-cam). The two differ in how channels are weighted against each other.
    """

    name: ClassVar[str] = "gradcam++"
    __slots__ = ("_normalize_alphas",)

    def __init__(self, layer: str = DEFAULT_TAP_LAYER, normalize_alphas: bool = True) -> None:
        super().__init__(layer)
        self._normalize_alphas = bool(normalize_alphas)

    @property
    def normalize_alphas(self) -> bool:
        return self._normalize_alphas

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layer={self._layer!r}, "
            f"normalize_alphas={self._normalize_alphas})"
        )

    def weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        second = gradients**2
        third = second * gradients
        global_sum = activations.sum(axis=(1, 2), keepdims=True)
        denominator = 2.0 * second + third * global_sum
        safe = np.where(denominator != 0.0, denominator, 1.0)
        alphas = np.where(denominator != 0.0, second / safe, 0.0)
        if self._normalize_alphas:
            total = alphas.sum(axis=(1, 2), keepdims=True)
            alphas = alphas / np.where(total != 0.0, total, 1.0)
        return (alphas * np.maximum(gradients, 0.0)).sum(axis=(1, 2))


METHODS: dict[str, type[CAMMethod]] = {
    GradCAM.name: GradCAM,
    GradCAMPlusPlus.name: GradCAMPlusPlus,
}


def get_method(name: str, layer: str = DEFAULT_TAP_LAYER) -> CAMMethod:
    """A CAM method by name (``"gradcam"`` or ``"gradcam++"``), for configs and the service."""
    try:
        return METHODS[name](layer)
    except KeyError:
        raise ValueError(f"unknown CAM method {name!r}; choose one of {sorted(METHODS)}") from None


def upsample(maps: np.ndarray, size: Size) -> np.ndarray:
    """Resize ``(B, h, w)`` or ``(h, w)`` maps to ``size`` = ``(height, width)`` or a side.

    Bilinear (``cv2.INTER_LINEAR``), so values in [0, 1] stay in [0, 1]; float32 out, same rank.
    """
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    array = np.asarray(maps, dtype=np.float32)
    if array.ndim == 2:
        return cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
    if array.ndim != 3:
        raise ValueError(f"maps must be (B, h, w) or (h, w), got shape {array.shape}")
    out = np.empty((array.shape[0], height, width), dtype=np.float32)
    for index, single in enumerate(array):
        out[index] = cv2.resize(single, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def _normalise(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each map by its maximum; all-zero maps stay zero instead of becoming NaN."""
    peaks = raw.max(axis=(1, 2))
    safe = np.where(peaks > 0.0, peaks, 1.0)[:, None, None]
    return (raw / safe).astype(np.float32), peaks.astype(np.float32)


def _as_batch(pixels: np.ndarray) -> np.ndarray:
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or len(array) == 0:
        raise ValueError(
            f"pixels must be (B, H, W, C) with B >= 1 or one (H, W, C) image, got {array.shape}"
        )
    return array


def _class_array(selection: ClassSelection, batch: int, num_classes: int) -> np.ndarray:
    array = np.asarray(selection)
    if array.ndim == 0:
        array = np.full(batch, array)
    if array.shape != (batch,):
        raise ValueError(f"class_indices must be one int or {batch} ints, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"class_indices must be integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= num_classes:
        raise ValueError(f"class_indices must lie in [0, {num_classes}), got {array.tolist()}")
    return array.astype(np.int32)
