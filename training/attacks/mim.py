"""Momentum Iterative Method (MIM, "MI-FGSM"), an L∞ iterative attack with momentum.

Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018.

From ``x₀ = x`` and ``g₀ = 0``::

    g_{k+1} = μ · g_k + ∇ₓ CE(f(x_k), y) / ‖∇ₓ CE(f(x_k), y)‖₁      (per sample)
    x_{k+1} = clip_[0,255]( Π_{‖·−x‖∞ ≤ ε}( x_k + α · sign(g_{k+1}) ) )

with decay μ = ``decay`` (≥ 0; μ = 0 is BIM). Targeted: the negated gradient of the target's
loss. (Dong et al. use α = ε / steps; here the default is ``2.5 · ε / steps`` like the other
iterative attacks, and the projection keeps the result inside the ε-ball either way.)

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``.
Output: float32 ``(N, H, W, 3)`` in ``[clip_min, clip_max]`` with ``‖x_adv − x‖∞ ≤ ε``.
Deterministic (no random start).
"""

from __future__ import annotations

from numbers import Real

import keras
import numpy as np

from training.attacks._common import (
    ascent_gradient,
    check_count,
    check_step_size,
    project_linf,
    safe_normalise,
)
from training.attacks.base import Attack, AttackError


class MIM(Attack):
    """MI-FGSM: sign steps along an accumulated, L1-normalised gradient (momentum ``decay``)."""

    name = "mim"
    norm = "inf"
    kind = "iterative"

    def __init__(
        self,
        epsilon: float,
        step_size: float | None = None,
        steps: int = 10,
        decay: float = 1.0,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            epsilon, targeted=targeted, clip_min=clip_min, clip_max=clip_max, seed=seed
        )
        self.steps = check_count(self.name, "steps", steps)
        self.step_size = check_step_size(self.name, step_size, self.epsilon, self.steps)
        if (
            isinstance(decay, bool)
            or not isinstance(decay, Real)
            or not np.isfinite(decay)
            or (decay < 0)
        ):
            raise AttackError(f"{self.name}: decay must be a finite number >= 0, got {decay!r}")
        self.decay: float = float(decay)

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        x_adv = x
        momentum = np.zeros_like(x)
        for _ in range(self.steps):
            grad = ascent_gradient(model, x_adv, onehot, self.targeted)
            l1 = np.sum(np.abs(grad.reshape(len(grad), -1)), axis=1)
            momentum = self.decay * momentum + safe_normalise(grad, l1)
            x_adv = project_linf(
                x_adv + self.step_size * np.sign(momentum),
                x,
                self.epsilon,
                self.clip_min,
                self.clip_max,
            )
        return x_adv
