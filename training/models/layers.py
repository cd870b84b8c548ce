"""Custom Keras layers: the in-model ImageNet preprocessing and Datta et al.'s soft attention.

Both are written with ``keras.ops`` only, so they run on the TensorFlow and the JAX backend, and
both are registered for serialisation so a saved ``.keras`` model reloads with ``safe_mode=True``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from training.architecture import ATTENTION_VARIANTS, AttentionVariant

# Keras ResNet-50 "caffe" preprocessing: ImageNet channel means in BGR order (paper §3.2).
IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="medrobust")
class CaffePreprocess(keras.layers.Layer):
    """Raw RGB pixels in [0, 255] → BGR minus the ImageNet means, with no scaling.

    Living inside the model keeps every gradient (attacks, Grad-CAM) in raw pixel space.
    """

    def call(self, inputs: Any) -> Any:
        bgr = ops.flip(ops.cast(inputs, self.compute_dtype), axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_BGR_MEANS, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


@keras.saving.register_keras_serializable(package="medrobust")
class SoftAttention(keras.layers.Layer):
    """Soft attention over the spatial positions of a feature map (Datta et al. 2021).

    Head k computes logits ``S_k = ReLU(conv(X; W_k) + b_k)``, a softmax over the H·W positions
    gives its map ``A_k``, and the output scales the features by the maps:
    ``U = X ⊙ Σ_k A_k`` when ``aggregate`` (the paper's setting), else the per-head products are
    concatenated along channels (C·m channels). There is no learned scale γ.

    ``variant`` picks how the logits are computed:

    * ``"paper"``: a 3×3 convolution spanning all C channels, i.e. a Conv2D with m filters, as the
      paper and Datta et al. describe it. Kernel ``(3, 3, C, m)``.
    * ``"datta-reference"``: what Datta's public code computes. It builds a kernel
      ``(C, 3, 3, 1, m)`` and runs conv3d over X expanded to ``(H, W, C, 1)`` with strides
      ``(1, 1, C)`` and "same" padding, so the C-long kernel axis slides along H, and along
      channels only a 3-wide window at depth 0 is seen: the logits depend on channels 0–2 alone.
      We compute exactly that result as an equivalent, memory-cheap Conv2D (the rows of the
      C-long axis that ever overlap the feature map, channels 0–2); tests check it against the
      conv3d written out by its definition.

    Both variants have ``9·C·m + m`` parameters. Returns ``[U, maps]`` with maps ``(B, H, W, m)``.
    """

    def __init__(
        self,
        heads: int = 16,
        variant: AttentionVariant = "paper",
        aggregate: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(f"Expected `heads` to be a positive integer. Received: heads={heads}")
        if variant not in ATTENTION_VARIANTS:
            raise ValueError(
                f"Expected `variant` to be one of {ATTENTION_VARIANTS}. "
                f"Received: variant={variant!r}"
            )
        self.heads = heads
        self.variant = variant
        self.aggregate = bool(aggregate)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        known = [size for size in input_shape[1:] if size is not None]
        if len(input_shape) != 4 or len(known) != 3:
            raise ValueError(
                f"Expected a 4-D input (batch, H, W, C) with known H, W, C. Received: {input_shape}"
            )
        channels = known[-1]
        if self.variant == "datta-reference" and channels < 3:
            raise ValueError(f"The datta-reference variant needs C >= 3. Received C={channels}")
        kernel_shape: tuple[int, ...] = (3, 3, channels, self.heads)
        if self.variant == "datta-reference":
            kernel_shape = (channels, 3, 3, 1, self.heads)
        self.kernel = self.add_weight(
            name="kernel", shape=kernel_shape, initializer="he_uniform", trainable=True
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.heads,), initializer="zeros", trainable=True
        )

    def _head_logits(self, features: Any) -> Any:
        if self.variant == "paper":
            logits = ops.conv(features, self.kernel, strides=1, padding="same")
        else:
            logits = self._datta_reference_logits(features)
        return ops.relu(logits + self.bias)

    def _datta_reference_logits(self, features: Any) -> Any:
        """conv3d(expand_dims(X, -1), kernel (C,3,3,1,m), strides (1,1,C), "same"), squeezed.

        "Same" padding puts ``p = (C-1)//2`` zero rows above the map, so output row h meets kernel
        rows ``i`` with ``0 <= h + i - p < H``; along depth a stride of C with a 3-wide window and
        no padding sees channels 0, 1, 2. Only those kernel rows and channels are used here.
        """
        height, channels = features.shape[1], features.shape[-1]
        centre = (channels - 1) // 2
        first = max(0, centre - (height - 1))
        last = min(channels, centre + height)
        # (rows along H, 3 along W, 3 along depth = channels 0-2, m): already a Conv2D kernel.
        kernel = self.kernel[first:last, :, :, 0, :]
        top = centre - first
        bottom = (last - first) - 1 - top
        padded = ops.pad(features[..., :3], ((0, 0), (top, bottom), (1, 1), (0, 0)))
        return ops.conv(padded, kernel, strides=1, padding="valid")

    def call(self, inputs: Any) -> list[Any]:
        logits = self._head_logits(inputs)
        batch_shape = ops.shape(logits)
        height, width = inputs.shape[1], inputs.shape[2]
        flat = ops.reshape(logits, (batch_shape[0], height * width, self.heads))
        maps = ops.reshape(ops.softmax(flat, axis=1), (batch_shape[0], height, width, self.heads))
        if self.aggregate:
            attended = inputs * ops.sum(maps, axis=-1, keepdims=True)
        else:
            per_head = ops.expand_dims(maps, -1) * ops.expand_dims(inputs, -2)
            attended = ops.reshape(
                per_head, (batch_shape[0], height, width, self.heads * inputs.shape[-1])
            )
        return [attended, maps]

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> list[tuple[int | None, ...]]:
        batch, height, width, channels = input_shape
        out_channels = channels if self.aggregate or channels is None else channels * self.heads
        return [(batch, height, width, out_channels), (batch, height, width, self.heads)]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "heads": self.heads,
            "variant": self.variant,
            "aggregate": self.aggregate,
        }
