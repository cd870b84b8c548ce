"""Auto-PGD (APGD) under the L∞ norm: APGD-CE, APGD-DLR and the targeted APGD-T.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Algorithm 1.

PGD with momentum whose step size tunes itself, so the only budget is the number of iterations
``N``. From ``x⁰`` (random start in the ε-ball, or ``x``) with ``η = 2ε``::

    z^{k+1} = P(x^k + η · sign ∇f(x^k))
    x^{k+1} = P(x^k + α (z^{k+1} − x^k) + (1 − α)(x^k − x^{k−1}))      α = 0.75 (1 at k = 0)

where ``P`` projects onto the ε-ball around ``x`` and the pixel range, and ``f`` is the
per-image objective (:mod:`training.attacks.losses`). At the checkpoints ``w_j = ⌈p_j N⌉``,
``p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, an image halves its ``η``
and restarts from its best point so far ``x_max`` when

1. fewer than ``ρ = 0.75`` of its steps since the last checkpoint raised ``f``, or
2. its ``η`` was not halved at the last checkpoint and its best loss has not risen since.

Checkpoint ``w_j`` is judged once ``x^{w_j}`` has been evaluated (the reference code's reading),
and a restart also zeroes the momentum (``x^{k−1} ← x_max``): the momentum of the abandoned
trajectory would pull straight back towards it. All state is per image and vectorised over the
batch; each iteration is one compiled call (:func:`training.gradients.loss_step`) that takes the
gradient and does this bookkeeping on the device.

Per image, the result is the first iterate that fools the model, else the iterate with the
highest objective. ``restarts`` (≥ 1) repeats the attack from new random starts and keeps each
image's first success (as PGD does).

* ``apgd_ce``: ``f`` = cross-entropy of ``y`` (targeted: −CE of the target ``y``).
* ``apgd_dlr``: ``f`` = DLR loss (untargeted only; needs ≥ 3 classes).
* ``apgd_t``: APGD-T, untargeted in effect: ``y`` is the true label and the attack runs the
  targeted DLR loss towards each of the ``targets`` classes with the highest clean logits in turn
  (needs ≥ 4 classes), keeping each image's first success.

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``. Output:
float32, same shape, in ``[clip_min, clip_max]`` with ``‖x_adv − x‖∞ ≤ ε`` (pixel units).
Random starts are a pure function of ``(seed, sample_id, restart)``; otherwise deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops

from training import gradients
from training.attacks import losses
from training.attacks._common import check_count, keep_first_success, project_linf
from training.attacks.base import Attack, AttackError

MOMENTUM = 0.75
"""α: weight of the new gradient step against the previous update (paper §3.2)."""
RHO = 0.75
"""ρ: the fraction of successful steps below which a checkpoint halves η (Condition 1)."""
INITIAL_STEP = 2.0
"""η⁽⁰⁾ = 2ε: the first steps may cross the whole ball."""


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ⌈p_j · steps⌉`` at which η may be halved, ``w₀ = 0`` included."""
    fractions = [0.0, 0.22]
    while True:
        following = fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06)
        if following > 1:
            break
        fractions.append(following)
    # Rounded first: 0.22 + 0.19 + 0.16 is 0.5700000000000001 in floating point, not above 0.57.
    return sorted({math.ceil(round(p * steps, 9)) for p in fractions})


def _per_image(values: Any) -> Any:
    return ops.reshape(values, (-1, 1, 1, 1))


def _make_update(targeted: bool) -> Callable:
    """One APGD iteration's bookkeeping and step, in ``keras.ops`` (compiled with the gradient).

    State: ``(x_k, x_{k−1}, η, x_max, ∇f(x_max), f_max, f(x_k) after a restart, successes since
    the last checkpoint, η and f_max at the last checkpoint, first fooling iterate, found)``.
    """

    def update(state: tuple, constants: tuple, f: Any, grad: Any, logits: Any) -> tuple:
        x_k, x_prev, eta, x_max, g_max, f_max, f_prev, count, eta_last, f_max_last, adv, found = (
            state
        )
        x, onehot, _, numbers = constants
        first, checkpoint = numbers[0] > 0.5, numbers[1] > 0.5
        span, alpha, epsilon, low, high = numbers[2], numbers[3], numbers[4], numbers[5], numbers[6]
        grad = ops.nan_to_num(grad, nan=0.0)

        count = count + ops.where(first, 0.0, ops.cast(f > f_prev, "float32"))
        better = ops.logical_or(first, f > f_max)
        x_max = ops.where(_per_image(better), x_k, x_max)
        g_max = ops.where(_per_image(better), grad, g_max)
        f_max = ops.where(better, f, f_max)

        predicted, wanted = ops.argmax(logits, axis=-1), ops.argmax(onehot, axis=-1)
        success = predicted == wanted if targeted else predicted != wanted
        new = ops.logical_and(success, ops.logical_not(found))
        adv = ops.where(_per_image(new), x_k, adv)
        found = ops.logical_or(found, success)

        stalled = ops.logical_and(eta == eta_last, f_max <= f_max_last)
        halve = ops.logical_and(checkpoint, ops.logical_or(count < RHO * span, stalled))
        snapshot = ops.logical_or(first, checkpoint)
        eta_last = ops.where(snapshot, eta, eta_last)  # η before halving: Condition 2 asks
        f_max_last = ops.where(snapshot, f_max, f_max_last)  # whether it was halved here
        count = ops.where(snapshot, 0.0, count)
        eta = ops.where(halve, eta / 2, eta)
        x_k = ops.where(_per_image(halve), x_max, x_k)
        x_prev = ops.where(_per_image(halve), x_max, x_prev)
        grad = ops.where(_per_image(halve), g_max, grad)
        f_prev = ops.where(halve, f_max, f)

        def project(point: Any) -> Any:
            return ops.clip(ops.clip(point, x - epsilon, x + epsilon), low, high)

        z = project(x_k + _per_image(eta) * ops.sign(grad))
        x_next = project(x_k + alpha * (z - x_k) + (1 - alpha) * (x_k - x_prev))
        return (
            x_next, x_k, eta, x_max, g_max, f_max, f_prev, count, eta_last, f_max_last, adv, found
        )  # fmt: skip

    return update


class _APGD(Attack):
    """The APGD loop; subclasses choose the objective (and APGD-T the targets)."""

    norm = "inf"
    kind = "adaptive"
    can_target: ClassVar[bool] = True

    def __init__(
        self,
        epsilon: float,
        steps: int = 100,
        restarts: int = 1,
        random_start: bool = True,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        if targeted and not self.can_target:
            raise AttackError(
                f"{self.name} is untargeted: y is the true label (apgd_t picks its own targets)"
            )
        super().__init__(
            epsilon, targeted=targeted, clip_min=clip_min, clip_max=clip_max, seed=seed
        )
        self.steps = check_count(self.name, "steps", steps)
        self.restarts = check_count(self.name, "restarts", restarts)
        self.random_start = bool(random_start)

    def _objective(self, logits: Any, constants: tuple) -> Any:
        """The per-image loss to raise; ``constants`` = ``(x, onehot, target onehot, numbers)``."""
        raise NotImplementedError

    def _start(self, x: np.ndarray, sample_ids: np.ndarray, restart: int) -> np.ndarray:
        if not self.random_start:
            return x
        noise = self._random_unit_noise(x.shape[1:], sample_ids, stream=restart)
        return np.clip(x + self.epsilon * noise, self.clip_min, self.clip_max)

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        restarts = self.restarts if self.random_start else 1
        return keep_first_success(
            self,
            model,
            onehot,
            restarts,
            lambda r: self._run(model, x, onehot, onehot, self._start(x, sample_ids, r)),
        )

    def _run(
        self,
        model: keras.Model,
        x: np.ndarray,
        onehot: np.ndarray,
        target: np.ndarray,
        start: np.ndarray,
    ) -> np.ndarray:
        """One APGD run of ``steps`` iterations from ``start``; ``target`` feeds APGD-T's loss."""
        key = (type(self).__name__, self.targeted)
        step = gradients.loss_step(model, key, self._objective, _make_update(self.targeted))
        n = len(x)
        eta = np.full(n, INITIAL_STEP * self.epsilon, np.float32)
        zeros = np.zeros(n, np.float32)
        state: tuple = (start, start, eta, start, np.zeros_like(x), zeros, zeros, zeros, eta,
                        zeros, start, np.zeros(n, bool))  # fmt: skip
        marks = checkpoints(self.steps)
        for k in range(self.steps):
            is_mark = k in marks and k > 0
            span = marks[marks.index(k)] - marks[marks.index(k) - 1] if is_mark else 0
            numbers = np.array(
                [k == 0, is_mark, span, 1.0 if k == 0 else MOMENTUM, self.epsilon,
                 self.clip_min, self.clip_max],
                np.float32,
            )  # fmt: skip
            state = step(state, (x, onehot, target, numbers))
        last, x_max, f_max, adv, found = (np.asarray(state[i]) for i in (0, 3, 5, 10, 11))
        # The last iterate has not been evaluated yet: one forward pass settles it.
        logits = gradients.logits(model, last)
        f = keras.ops.convert_to_numpy(self._objective(logits, (x, onehot, target, None)))
        x_max = np.where((f > f_max)[:, None, None, None], last, x_max)
        predicted, wanted = np.argmax(logits, axis=1), np.argmax(onehot, axis=1)
        success = predicted == wanted if self.targeted else predicted != wanted
        adv = np.where((success & ~found)[:, None, None, None], last, adv)
        found = found | success
        best = np.where(found[:, None, None, None], adv, x_max)
        return project_linf(best, x, self.epsilon, self.clip_min, self.clip_max)


class APGDCE(_APGD):
    """APGD on the cross-entropy (targeted: on −CE of the target ``y``)."""

    name = "apgd_ce"

    def _objective(self, logits: Any, constants: tuple) -> Any:
        if self.targeted:
            return losses.negative_cross_entropy(logits, constants[1])
        return losses.cross_entropy(logits, constants[1])


class APGDDLR(_APGD):
    """APGD on the DLR loss, untargeted; needs ≥ 3 classes."""

    name = "apgd_dlr"
    can_target = False

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        _require_classes(self.name, onehot, 3)
        return super()._perturb(model, x, onehot, sample_ids)

    def _objective(self, logits: Any, constants: tuple) -> Any:
        return losses.dlr(logits, constants[1])


class APGDT(_APGD):
    """APGD-T: targeted DLR towards each of the ``targets`` most likely wrong classes in turn.

    ``y`` is the true label and success means misclassification (the attack is untargeted in
    effect), so ``targeted`` must stay False. ``restarts`` apply per target class.
    """

    name = "apgd_t"
    can_target = False

    def __init__(
        self,
        epsilon: float,
        steps: int = 100,
        targets: int = 9,
        restarts: int = 1,
        random_start: bool = True,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            epsilon,
            steps=steps,
            restarts=restarts,
            random_start=random_start,
            targeted=targeted,
            clip_min=clip_min,
            clip_max=clip_max,
            seed=seed,
        )
        self.targets = check_count(self.name, "targets", targets)

    def _objective(self, logits: Any, constants: tuple) -> Any:
        return losses.targeted_dlr(logits, constants[1], constants[2])

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        num_classes = _require_classes(self.name, onehot, 4)
        targets = min(self.targets, num_classes - 1)
        # Wrong classes by clean logit, most likely first: the easiest targets are tried first.
        clean = np.where(onehot > 0, -np.inf, gradients.logits(model, x))
        ranking = np.argsort(-clean, axis=1)
        restarts = self.restarts if self.random_start else 1
        eye = np.eye(num_classes, dtype=np.float32)

        def run(index: int) -> np.ndarray:
            rank, restart = divmod(index, restarts)
            target = eye[ranking[:, rank]]
            return self._run(model, x, onehot, target, self._start(x, sample_ids, restart))

        return keep_first_success(self, model, onehot, targets * restarts, run)


def _require_classes(name: str, onehot: np.ndarray, minimum: int) -> int:
    num_classes = int(onehot.shape[1])
    if num_classes < minimum:
        raise AttackError(f"{name}: its loss needs at least {minimum} classes, got {num_classes}")
    return num_classes
