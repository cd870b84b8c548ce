"""Fast Gradient Sign Method (FGSM), an L∞ single-step attack.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.

``x_adv = clip(x + ε · sign(∇ₓ CE(f(x), y)), 0, 255)`` (untargeted), or
``x_adv = clip(x − ε · sign(∇ₓ CE(f(x), t)), 0, 255)`` (targeted: descend the loss of target t).

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``.
Output: float32 ``(N, H, W, 3)`` in ``[clip_min, clip_max]`` with ``‖x_adv − x‖∞ ≤ ε``
(ε in pixel units). CE is the cross-entropy on the model's logits.
"""

from __future__ import annotations

import keras
import numpy as np

from training.attacks._common import ascent_gradient
from training.attacks.base import Attack


class FGSM(Attack):
    """One signed-gradient step of size ``epsilon`` (L∞); deterministic, no random start."""

    name = "fgsm"
    kind = "single-step"
    norm = "inf"

    def __init__(
        self,
        epsilon: float,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            epsilon, targeted=targeted, clip_min=clip_min, clip_max=clip_max, seed=seed
        )

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        direction = np.sign(ascent_gradient(model, x, onehot, self.targeted))
        return np.clip(x + self.epsilon * direction, self.clip_min, self.clip_max)
