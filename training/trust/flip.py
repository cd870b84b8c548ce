"""The smallest perturbation that flips one prediction: an empirical bracket ``[lower, upper]``.

For an image ``x`` the model labels ``c``, search over the budget ε of a strong untargeted attack
(aimed at ``c``, the model's own label, not the true one):

1. **Bracket**: ε = ``start_epsilon``, ``growth``·ε, … up to ``max_epsilon`` until the attack
   finds an image labelled ≠ ``c``.
2. **Bisect** between the largest ε that failed and the smallest that succeeded until the
   bracket is narrower than ``precision``·upper (or ``min_epsilon``).

At each ε the attack runs up to ``restarts`` times from seeded random starts (stream ``r`` for
restart ``r``), so an answer is a pure function of (model, image, spec).

* ``upper`` — the smallest ε at which an adversarial image was found. It is **verified**: the
  image is moved exactly into the ε-ball (:func:`training.trust.ball.into_ball`), re-run through
  the model, and counts only if its label differs from ``c``. So "a perturbation of norm ≤ upper
  flips this prediction" is a fact, with the image to show it.
* ``lower`` — the largest ε tried at which the attack found nothing. It is an **empirical bound,
  not a guarantee**: a stronger attack may flip the prediction below it. For a guarantee, see
  :mod:`training.trust.smoothing` (a certified L2 radius, of a different, smoothed classifier).

Attacks: APGD-CE (Croce & Hein, ICML 2020) or PGD with restarts (Madry et al., ICLR 2018) for
L∞; PGD-L2 for L2. Units: pixels of the raw ``[0, 255]`` input (ε = 2 means 2/255 of the range;
L2 is over all ``H·W·3`` values). Cost is counted per answer in model calls; a deadline bounds
the wall clock (:class:`training.trust.budget.TrustDeadlineExceeded`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from training import gradients
from training.attacks import make_attack
from training.trust.ball import Norm, distance, into_ball
from training.trust.budget import CallTally, Deadline

FlipAttack = Literal["apgd_ce", "pgd", "pgd_l2"]

ATTACK_NORMS: dict[str, Norm] = {"apgd_ce": "inf", "pgd": "inf", "pgd_l2": "2"}
DEFAULT_ATTACK: dict[Norm, FlipAttack] = {"inf": "apgd_ce", "2": "pgd_l2"}
# Pixel units. L∞: 0.5/255 … 64/255. L2: 16 … 4096 (a 64-px image has √12288 ≈ 111 L2 per unit
# of L∞, so this spans roughly the same visual range).
DEFAULT_START: dict[Norm, float] = {"inf": 0.5, "2": 16.0}
DEFAULT_MAX: dict[Norm, float] = {"inf": 64.0, "2": 4096.0}
DEFAULT_MIN: dict[Norm, float] = {"inf": 1 / 16, "2": 1.0}

# Hard ceilings the spec enforces whatever the caller asks; a server narrows them further.
MAX_STEPS = 1000
MAX_RESTARTS = 20
MAX_MODEL_CALLS = 1_000_000


class FlipSpec(BaseModel):
    """How hard to search. ``None`` fields take the norm's default (see module constants)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    norm: Norm = "inf"
    attack: FlipAttack | None = Field(None, description="None: apgd_ce (L∞) or pgd_l2 (L2)")
    steps: int = Field(20, ge=1, le=MAX_STEPS, description="attack iterations per run")
    restarts: int = Field(1, ge=1, le=MAX_RESTARTS, description="random starts per ε")
    start_epsilon: float | None = Field(None, gt=0, description="first ε tried, pixel units")
    growth: float = Field(2.0, gt=1, le=16, description="ε grows by this factor until a flip")
    max_epsilon: float | None = Field(None, gt=0, description="largest ε tried, pixel units")
    min_epsilon: float | None = Field(
        None, gt=0, description="bisection stops once the bracket is narrower than this"
    )
    precision: float = Field(
        0.1, gt=0, lt=1, description="bisection stops once upper − lower ≤ precision · upper"
    )
    max_model_calls: int = Field(
        2000, ge=1, le=MAX_MODEL_CALLS, description="forward + gradient evaluations per answer"
    )
    deadline_s: float | None = Field(None, gt=0, description="wall-clock budget per answer")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> FlipSpec:
        if self.attack is not None and ATTACK_NORMS[self.attack] != self.norm:
            raise ValueError(
                f"attack {self.attack} is an L{self.attack_norm} attack, not L{self.norm}"
            )
        if self.norm == "inf" and self.ceiling > 255:
            raise ValueError(f"max_epsilon {self.ceiling} exceeds the pixel range (255) for L∞")
        if self.first > self.ceiling:
            raise ValueError(f"start_epsilon {self.first} exceeds max_epsilon {self.ceiling}")
        return self

    @property
    def attack_norm(self) -> Norm:
        return ATTACK_NORMS[self.attack_name]

    @property
    def attack_name(self) -> FlipAttack:
        return self.attack or DEFAULT_ATTACK[self.norm]

    @property
    def first(self) -> float:
        return self.start_epsilon or DEFAULT_START[self.norm]

    @property
    def ceiling(self) -> float:
        return self.max_epsilon or DEFAULT_MAX[self.norm]

    @property
    def floor(self) -> float:
        return self.min_epsilon or DEFAULT_MIN[self.norm]

    def run_cost(self) -> CallTally:
        """Model calls of one attack run on one image, plus the verifying forward pass.

        APGD evaluates its last iterate once more after ``steps`` gradient steps; PGD does not.
        ``test_reported_model_calls_are_the_calls_made`` (``tests/trust/test_trust_units.py``)
        checks these against the calls actually made.
        """
        extra = 1 if self.attack_name == "apgd_ce" else 0
        return CallTally(gradients=self.steps, forwards=extra + 1)


class EpsilonTrial(BaseModel):
    """One ε of the search and whether a verified flip was found there."""

    epsilon: float
    flipped: bool


class FlipReport(BaseModel):
    """The JSON-safe answer. ``upper`` is None when nothing up to ``max_epsilon`` flipped it.

    ``stopped``: ``precision`` (bracket narrow enough), ``max_epsilon`` (no flip found at the
    largest ε), or ``model_calls`` (budget spent; the bracket is valid but wider).
    """

    norm: Norm
    attack: FlipAttack
    clean_label: int
    lower: float = Field(description="largest ε with no flip found (empirical, not a guarantee)")
    upper: float | None = Field(description="smallest ε with a verified flip")
    adversarial_label: int | None
    adversarial_distance: float | None = Field(
        description="‖x_adv − x‖ in the norm (≤ upper), pixel units"
    )
    trials: list[EpsilonTrial]
    gradient_calls: int
    forward_calls: int
    model_calls: int
    stopped: Literal["precision", "max_epsilon", "model_calls"]
    steps: int
    restarts: int
    seed: int


@dataclass(frozen=True)
class Flip:
    """A :class:`FlipReport` and the verified adversarial image (None when none was found)."""

    report: FlipReport
    adversarial: np.ndarray | None


class _BudgetSpent(Exception):
    """The next attack run would exceed ``max_model_calls``."""


@dataclass
class _Search:
    """State of one image's search; lives for one call of :func:`smallest_flip`."""

    model: keras.Model
    x: np.ndarray
    label: int
    spec: FlipSpec
    deadline: Deadline
    tally: CallTally

    def attempt(self, epsilon: float) -> tuple[np.ndarray, int] | None:
        """A verified adversarial image at ``epsilon`` and its label, or None."""
        cost = self.spec.run_cost()
        attack = make_attack(
            self.spec.attack_name, epsilon=epsilon, steps=self.spec.steps, seed=self.spec.seed
        )
        for restart in range(self.spec.restarts):
            self.deadline.check()
            if self.tally.total + cost.total > self.spec.max_model_calls:
                raise _BudgetSpent
            found = attack.generate(
                self.model, self.x[None], np.array([self.label]), sample_ids=np.array([restart])
            )[0]
            self.tally.gradients += cost.gradients
            self.tally.forwards += cost.forwards
            candidate = into_ball(self.x, found, epsilon, self.spec.norm)
            label = int(np.argmax(gradients.logits(self.model, candidate[None])[0]))
            if label != self.label:
                return candidate, label
        return None


def smallest_flip(
    model: keras.Model,
    x: np.ndarray,
    spec: FlipSpec | None = None,
    deadline: Deadline | None = None,
) -> Flip:
    """Bracket the smallest ε (pixel units, ``spec.norm``) that flips ``model``'s label of ``x``.

    ``x``: one float image ``(H, W, 3)`` of raw pixels in [0, 255]. ``deadline`` (default: one
    of ``spec.deadline_s`` started now) may be shared by several calls. Raises
    :class:`~training.trust.budget.TrustDeadlineExceeded` when it passes; running out of
    ``max_model_calls`` instead ends the search with the bracket found so far.
    """
    spec = spec or FlipSpec()
    deadline = deadline or Deadline(spec.deadline_s, "flip search")
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected one image (H, W, C), got shape {x.shape}")
    tally = CallTally(forwards=1)
    label = int(np.argmax(gradients.logits(model, x[None])[0]))
    search = _Search(model, x, label, spec, deadline, tally)
    trials: list[EpsilonTrial] = []
    lower, upper, best = 0.0, None, None
    stopped: Literal["precision", "max_epsilon", "model_calls"] = "max_epsilon"

    def narrow_enough() -> bool:
        assert upper is not None
        return upper - lower <= max(spec.precision * upper, spec.floor)

    try:
        epsilon = spec.first
        while True:
            found = search.attempt(epsilon)
            trials.append(EpsilonTrial(epsilon=epsilon, flipped=found is not None))
            if found is not None:
                upper, best = epsilon, found
                break
            lower = epsilon
            if epsilon >= spec.ceiling:
                break
            epsilon = min(epsilon * spec.growth, spec.ceiling)
        while upper is not None and not narrow_enough():
            middle = (lower + upper) / 2
            found = search.attempt(middle)
            trials.append(EpsilonTrial(epsilon=middle, flipped=found is not None))
            if found is None:
                lower = middle
            else:
                upper, best = middle, found
        if upper is not None:
            stopped = "precision"
    except _BudgetSpent:
        stopped = "model_calls"
    adversarial, adversarial_label = best if best is not None else (None, None)
    report = FlipReport(
        norm=spec.norm,
        attack=spec.attack_name,
        clean_label=label,
        lower=lower,
        upper=upper,
        adversarial_label=adversarial_label,
        adversarial_distance=None if adversarial is None else distance(x, adversarial, spec.norm),
        trials=trials,
        gradient_calls=tally.gradients,
        forward_calls=tally.forwards,
        model_calls=tally.total,
        stopped=stopped,
        steps=spec.steps,
        restarts=spec.restarts,
        seed=spec.seed,
    )
    return Flip(report=report, adversarial=adversarial)
