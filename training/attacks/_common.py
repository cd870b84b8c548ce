"""Helpers shared by the iterative attacks: parameter checks, norms, projections, restarts.

All functions are vectorised over the batch (arrays are ``(N, H, W, C)`` float32); none loops
over samples, so an attack step costs one gradient call plus a few numpy passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

import keras
import numpy as np

from training import gradients
from training.attacks.base import Attack, AttackError

MADRY_STEP_FACTOR = 2.5
"""Default step size is ``2.5 * epsilon / steps`` (Madry et al. 2018, §C / appendix)."""


def check_count(attack_name: str, what: str, value: object) -> int:
    """An integer parameter that must be >= 1 (steps, restarts)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise AttackError(f"{attack_name}: {what} must be an integer >= 1, got {value!r}")
    return int(value)


def check_step_size(attack_name: str, step_size: object, epsilon: float, steps: int) -> float:
    """``step_size`` in pixel units, or Madry's default ``2.5 * epsilon / steps`` when ``None``."""
    if step_size is None:
        return MADRY_STEP_FACTOR * epsilon / steps
    if (
        isinstance(step_size, bool)
        or not isinstance(step_size, Real)
        or not math.isfinite(step_size)
        or step_size <= 0
    ):
        raise AttackError(
            f"{attack_name}: step_size must be a finite number > 0 (pixel units), got {step_size!r}"
        )
    return float(step_size)


def per_sample(values: np.ndarray) -> np.ndarray:
    """Reshape a per-sample vector ``(N,)`` so it broadcasts against ``(N, H, W, C)``."""
    return values.reshape((-1,) + (1,) * 3)


def l2_norms(values: np.ndarray) -> np.ndarray:
    """Per-sample L2 norms, shape ``(N,)``."""
    return np.sqrt(np.sum(np.square(values.reshape(len(values), -1)), axis=1))


def safe_normalise(values: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``values / norms`` per sample, with zero where a norm is zero (no NaN)."""
    norms = per_sample(norms.astype(np.float32))
    return np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)


def project_linf(
    x_adv: np.ndarray, x: np.ndarray, epsilon: float, clip_min: float, clip_max: float
) -> np.ndarray:
    """Project onto the L∞ ball of radius ``epsilon`` around ``x``, then onto the pixel range."""
    return np.clip(np.clip(x_adv, x - epsilon, x + epsilon), clip_min, clip_max)


def project_l2(
    x_adv: np.ndarray, x: np.ndarray, epsilon: float, clip_min: float, clip_max: float
) -> np.ndarray:
    """Clip to the pixel range, then project onto the L2 ball of radius ``epsilon`` around ``x``.

    The order is ART's (``ProjectedGradientDescent``): the rescaled point lies between ``x`` and a
    point in the range, so it stays in the range (up to rounding, which the final clip removes).
    """
    delta = np.clip(x_adv, clip_min, clip_max) - x
    norms = l2_norms(delta)
    scale = np.minimum(1.0, epsilon / np.maximum(norms, 1e-12)).astype(np.float32)
    return np.clip(x + delta * per_sample(scale), clip_min, clip_max)


def fooled(logits: np.ndarray, onehot: np.ndarray, targeted: bool) -> np.ndarray:
    """Per-sample success: prediction != label (untargeted) or prediction == target (targeted)."""
    predicted = np.argmax(logits, axis=1)
    wanted = np.argmax(onehot, axis=1)
    return predicted == wanted if targeted else predicted != wanted


def ascent_gradient(
    model: keras.Model, x_adv: np.ndarray, onehot: np.ndarray, targeted: bool
) -> np.ndarray:
    """The direction that helps the attacker: +∇CE(true label), or −∇CE(target) when targeted.

    The single place the iterative attacks take a gradient (through :mod:`training.gradients`).
    """
    grad, _ = gradients.loss_input_gradient(model, x_adv, onehot)
    grad = np.nan_to_num(grad.astype(np.float32, copy=False), nan=0.0)
    return -grad if targeted else grad


def keep_first_success(
    attack: Attack,
    model: keras.Model,
    onehot: np.ndarray,
    restarts: int,
    run: Callable[[int], np.ndarray],
) -> np.ndarray:
    """Run ``run(restart)`` ``restarts`` times; keep per sample the first restart that fools
    the model, else the last one. Stops early once every sample is fooled.
    """
    best = run(0)
    if restarts == 1:
        return best
    done = fooled(gradients.logits(model, best), onehot, attack.targeted)
    for restart in range(1, restarts):
        if done.all():
            break
        candidate = run(restart)
        best = np.where(per_sample(done), best, candidate)
        if restart < restarts - 1:
            done |= fooled(gradients.logits(model, candidate), onehot, attack.targeted)
    return best
