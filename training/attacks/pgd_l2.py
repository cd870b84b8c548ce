"""Projected Gradient Descent under the L2 norm (PGD-L2), with random start and restarts.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018 (the L2 variant of their PGD).

Starting from ``x₀ = x + δ₀`` with δ₀ uniform in the L2 ball of radius ε (random start,
clipped to the pixel range) or ``x₀ = x``::

    g_k     = ∇ₓ CE(f(x_k), y) / ‖∇ₓ CE(f(x_k), y)‖₂           (per sample)
    x_{k+1} = clip_[0,255]( Π_{‖·−x‖₂ ≤ ε}( x_k + α · g_k ) )

(targeted: the negated gradient of the target's loss). Restarts keep, per sample, the first
restart that fools the model, else the last.

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``.
Output: float32 ``(N, H, W, 3)`` in ``[clip_min, clip_max]`` with ``‖x_adv − x‖₂ ≤ ε``, the
norm taken over all ``H·W·3`` pixel values. ε and α are in pixel units, so an L2 budget is much
larger than an L∞ one for the same visual change (ε₂ = ε∞·√(H·W·3) bounds the L∞ ball).
Default α is ``2.5 · ε / steps``. Random starts are a pure function of
``(seed, sample_id, restart)``.
"""

from __future__ import annotations

import keras
import numpy as np

from training.attacks._common import ascent_gradient, l2_norms, project_l2, safe_normalise
from training.attacks.iterative import ProjectedGradientAttack


class PGDL2(ProjectedGradientAttack):
    """PGD-L2: ``steps`` L2-normalised gradient steps of size ``step_size``, projected on the
    L2 ε-ball. ``step_size=None`` means ``2.5 · epsilon / steps``.
    """

    name = "pgd_l2"
    kind = "iterative"
    norm = "2"

    def _start(self, x: np.ndarray, sample_ids: np.ndarray, restart: int) -> np.ndarray:
        return np.clip(
            x + self._uniform_in_l2_ball(x.shape[1:], sample_ids, restart),
            self.clip_min,
            self.clip_max,
        )

    def _uniform_in_l2_ball(
        self, shape: tuple[int, ...], sample_ids: np.ndarray, restart: int
    ) -> np.ndarray:
        """δ uniform in the L2 ball of radius ε, per sample from (seed, sample_id, restart).

        Built from the base class's per-sample uniform noise: a Gaussian direction by Box–Muller
        and a radius ε·u^(1/d), which together are uniform in the d-dimensional ball.
        """
        d = int(np.prod(shape))
        u = self._random_unit_noise((2 * d + 1,), sample_ids, stream=restart).astype(np.float64)
        radius_u = 1.0 - np.abs(u[:, :d])  # uniform on (0, 1]
        angle = np.pi * u[:, d : 2 * d]  # uniform on (-π, π)
        gaussian = np.sqrt(-2.0 * np.log(radius_u)) * np.cos(angle)
        direction = gaussian / np.maximum(np.linalg.norm(gaussian, axis=1, keepdims=True), 1e-12)
        radius = self.epsilon * np.abs(u[:, 2 * d]) ** (1.0 / d)
        return (direction * radius[:, None]).reshape(len(sample_ids), *shape).astype(np.float32)

    def _iterate(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, x_adv: np.ndarray
    ) -> np.ndarray:
        for _ in range(self.steps):
            grad = ascent_gradient(model, x_adv, onehot, self.targeted)
            step = safe_normalise(grad, l2_norms(grad))
            x_adv = project_l2(
                x_adv + self.step_size * step, x, self.epsilon, self.clip_min, self.clip_max
            )
        return x_adv
