"""The shared skeleton of the projected-gradient attacks (PGD-L∞, PGD-L2 and BIM).

They differ only in where an iteration starts and in its steps (direction and projection); the
parameters, their validation, and the restart loop that keeps each image's first success live
here once.
"""

from __future__ import annotations

from abc import abstractmethod

import keras
import numpy as np

from training.attacks._common import check_count, check_step_size, keep_first_success
from training.attacks.base import Attack


class ProjectedGradientAttack(Attack):
    """``steps`` projected gradient steps of ``step_size`` from a (random) start, ``restarts``
    times. ``step_size=None`` means ``2.5 · epsilon / steps`` (Madry's rule)."""

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
        # Without a random start every restart would repeat the first one exactly.
        restarts = self.restarts if self.random_start else 1
        return keep_first_success(
            self, model, onehot, restarts, lambda r: self._run(model, x, onehot, sample_ids, r)
        )

    def _run(
        self,
        model: keras.Model,
        x: np.ndarray,
        onehot: np.ndarray,
        sample_ids: np.ndarray,
        restart: int,
    ) -> np.ndarray:
        """One restart: ``steps`` steps from its start."""
        x_adv = self._start(x, sample_ids, restart) if self.random_start else x
        return self._iterate(model, x, onehot, x_adv)

    @abstractmethod
    def _start(self, x: np.ndarray, sample_ids: np.ndarray, restart: int) -> np.ndarray:
        """A random point of the ε-ball around ``x``, a pure function of (seed, id, restart)."""

    @abstractmethod
    def _iterate(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, x_adv: np.ndarray
    ) -> np.ndarray:
        """``steps`` gradient steps from ``x_adv``, each projected back onto the ε-ball and the
        pixel range."""
