"""The one small interface every attack implements: ``attack.generate(model, x, y) -> x_adv``.

Conventions shared by all attacks (paper §3.2: perturbations live in pixel space):

* ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[clip_min, clip_max]`` = ``[0, 255]``;
  ``y``: int ``(N,)`` true labels (untargeted) or target labels (``targeted=True``).
* ``epsilon`` and step sizes are in pixel units: ``epsilon=2`` means 2/255 of the range.
* Attacks work on **logits** (the models output logits) and clip to the valid range every step.
* Randomness (random starts) is drawn per sample from ``(seed, sample_id)``, so an image gets
  the same perturbation whether it is attacked alone, in another batch, or in another shard.
* Parameters are validated when the attack is made; instances hold only those parameters, so
  one instance can serve concurrent callers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import keras
import numpy as np

#: How an attack searches; the gradient-masking checks (``training.robustness.diagnostics``)
#: compare attacks of different kinds on the same images.
AttackKind = Literal["single-step", "iterative", "adaptive", "black-box", "ensemble"]


class AttackError(ValueError):
    """An attack was asked for with parameters it cannot take."""


class Attack(ABC):
    """Base of all attacks; subclasses implement :meth:`_perturb`."""

    name: ClassVar[str]
    norm: ClassVar[str]  # "inf" or "2"
    kind: ClassVar[AttackKind | None] = None  # None: not classified (e.g. an ART attack)

    def __init__(
        self,
        epsilon: float,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        if not np.isfinite(epsilon) or epsilon < 0:
            raise AttackError(f"{self.name}: epsilon must be a finite number >= 0, got {epsilon}")
        if not clip_min < clip_max:
            raise AttackError(f"{self.name}: clip_min {clip_min} must be below clip_max {clip_max}")
        self.epsilon = float(epsilon)
        self.targeted = bool(targeted)
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        self.seed = int(seed)

    def generate(
        self,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        sample_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """Adversarial versions of ``x`` (same shape, float32, within the clip range).

        ``sample_ids`` (default ``0..N-1``) identify images for per-sample randomness; evaluation
        passes global dataset indices so sharded runs reproduce the unsharded one exactly.
        """
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        if x.ndim != 4 or len(x) != len(y):
            raise AttackError(
                f"{self.name}: expected x (N,H,W,C) and y (N,), got {x.shape}, {y.shape}"
            )
        if len(x) == 0 or self.epsilon == 0:
            return x.copy()
        ids = np.arange(len(x)) if sample_ids is None else np.asarray(sample_ids)
        num_classes = int(model.output.shape[-1])
        onehot = np.eye(num_classes, dtype=np.float32)[y]
        x_adv = self._perturb(model, x, onehot, ids)
        return np.clip(x_adv, self.clip_min, self.clip_max).astype(np.float32)

    @abstractmethod
    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        """The attack proper; ``onehot`` is the true class (or the target, when targeted)."""

    def params(self) -> dict[str, Any]:
        """JSON-safe parameters, recorded in robustness reports so a run can be repeated."""
        return {
            "name": self.name,
            "norm": self.norm,
            **{k: v for k, v in vars(self).items() if isinstance(v, int | float | bool | str)},
        }

    def _random_unit_noise(
        self, shape: tuple[int, ...], sample_ids: np.ndarray, stream: int = 0
    ) -> np.ndarray:
        """Uniform(-1, 1) noise of ``shape`` per sample, a pure function of (seed, sample id).

        ``stream`` > 0 draws another independent, equally reproducible stream (e.g. restart r).
        """
        noise = np.empty((len(sample_ids), *shape), dtype=np.float32)
        for row, sample_id in enumerate(sample_ids):
            key = (
                (self.seed, int(sample_id)) if stream == 0 else (self.seed, int(sample_id), stream)
            )
            rng = np.random.default_rng(key)
            noise[row] = rng.uniform(-1.0, 1.0, size=shape)
        return noise
