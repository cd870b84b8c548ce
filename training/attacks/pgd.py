"""Projected Gradient Descent under the L∞ norm (PGD-L∞), with random start and restarts.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

Starting from ``x₀ = x + U(−ε, ε)`` (random start, clipped to the pixel range) or ``x₀ = x``::

    x_{k+1} = clip_[0,255]( Π_{‖·−x‖∞ ≤ ε}( x_k + α · sign(∇ₓ CE(f(x_k), y)) ) )

(targeted: ``− α · sign(∇ₓ CE(f(x_k), t))``, descending the loss of the target). With
``restarts > 1`` the attack is repeated from different random starts and, per sample, the first
restart that fools the model is kept (untargeted: prediction ≠ y; targeted: prediction = t),
else the last restart.

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``.
Output: float32 ``(N, H, W, 3)`` in ``[clip_min, clip_max]`` with ``‖x_adv − x‖∞ ≤ ε``.
ε and the step size α are in pixel units. Default α is ``2.5 · ε / steps`` (Madry's rule).
Random starts are a pure function of ``(seed, sample_id, restart)``.
"""

from __future__ import annotations

import keras
import numpy as np

from training.attacks._common import (
    ascent_gradient,
    check_count,
    check_step_size,
    keep_first_success,
    project_linf,
)
from training.attacks.base import Attack


class PGDLinf(Attack):
    """PGD-L∞: ``steps`` signed-gradient steps of size ``step_size``, projected on the ε-ball.

    ``step_size=None`` means ``2.5 · epsilon / steps``. ``random_start`` draws the start uniformly
    in the ε-ball; ``restarts`` (≥ 1) repeats the attack from new random starts.
    """

    name = "pgd"
    norm = "inf"

    def __init__(
        self,
        epsilon: float,
        step_size: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            epsilon, targeted=targeted, clip_min=clip_min, clip_max=clip_max, seed=seed
        )
        self.steps = check_count(self.name, "steps", steps)
        self.restarts = check_count(self.name, "restarts", restarts)
        self.step_size = check_step_size(self.name, step_size, self.epsilon, self.steps)
        self.random_start = bool(random_start)

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        def run(restart: int) -> np.ndarray:
            return self._iterate(model, x, onehot, self._start(x, sample_ids, restart))

        # Without a random start every restart would repeat the first one exactly.
        restarts = self.restarts if self.random_start else 1
        return keep_first_success(self, model, onehot, restarts, run)

    def _start(self, x: np.ndarray, sample_ids: np.ndarray, restart: int) -> np.ndarray:
        if not self.random_start:
            return x
        noise = self._random_unit_noise(x.shape[1:], sample_ids, stream=restart)
        return np.clip(x + self.epsilon * noise, self.clip_min, self.clip_max)

    def _iterate(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, x_adv: np.ndarray
    ) -> np.ndarray:
        for _ in range(self.steps):
            direction = np.sign(ascent_gradient(model, x_adv, onehot, self.targeted))
            x_adv = project_linf(
                x_adv + self.step_size * direction, x, self.epsilon, self.clip_min, self.clip_max
            )
        return x_adv
