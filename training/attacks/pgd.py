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

from typing import ClassVar

import keras
import numpy as np

from training import gradients
from training.attacks.iterative import ProjectedGradientAttack


class PGDLinf(ProjectedGradientAttack):
    """PGD-L∞: ``steps`` signed-gradient steps of size ``step_size``, projected on the ε-ball.

    ``step_size=None`` means ``2.5 · epsilon / steps``. ``random_start`` draws the start uniformly
    in the ε-ball; ``restarts`` (≥ 1) repeats the attack from new random starts.
    """

    name = "pgd"
    kind = "iterative"
    norm = "inf"
    #: run the network as a training step does (batch statistics, dropout; statelessly, see
    #: :mod:`training.gradients`): set by adversarial training's own subclass, never by users
    #: (restarts would still be judged in inference mode)
    network_training: ClassVar[bool] = False

    def _start(self, x: np.ndarray, sample_ids: np.ndarray, restart: int) -> np.ndarray:
        noise = self._random_unit_noise(x.shape[1:], sample_ids, stream=restart)
        return np.clip(x + self.epsilon * noise, self.clip_min, self.clip_max)

    def _iterate(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, x_adv: np.ndarray
    ) -> np.ndarray:
        # All steps in one call: on JAX they stay on the device (no host round trip per step).
        return gradients.linf_ascent_steps(
            model,
            x_adv,
            x,
            onehot,
            steps=self.steps,
            step_size=self.step_size,
            epsilon=self.epsilon,
            clip=(self.clip_min, self.clip_max),
            targeted=self.targeted,
            training=self.network_training,
        )
