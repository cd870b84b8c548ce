"""Gradient-masking checks: signs that the attacks, not the model, explain a robust accuracy.

A model can look robust because its gradients are useless to an attacker (saturating or
quantising layers, shattered or stochastic gradients) rather than because no small perturbation
changes its answer. Athalye, Carlini & Wagner (ICML 2018) and Carlini et al.'s "On Evaluating
Adversarial Robustness" (2019) list the symptoms checked here, on the report's own numbers:

``single_step_stronger``
    FGSM fools more images than an iterative or adaptive attack at the same ε. An iterative
    attack starts where FGSM's direction points and can only improve on it, unless the gradient
    it follows is misleading.
``black_box_stronger``
    Square (no gradients) fools more images than the strongest white-box attack at the same ε.
``accuracy_rises_with_epsilon``
    Robust accuracy is higher at a larger ε (a larger ball contains the smaller one).
``not_zero_at_huge_epsilon``
    A gradient attack leaves a robust accuracy clearly above ~0 at ε ≥ 64 (a quarter of the
    pixel range), where any image can be turned into another class's look-alike.
``pgd_apgd_gap``
    PGD (or BIM/MIM) leaves ≥ 5 points more robust accuracy than APGD/AutoAttack: PGD's fixed
    step size overestimates robustness, and a report resting on it alone is not to be believed.

Every comparison is paired (the same images): it fires only when McNemar's exact test on the
discordant images rejects equality at level ``ALPHA`` divided by the number of comparisons of
that check in the report (Bonferroni), so sampling noise on small evaluations does not raise
flags. A check that the evaluation cannot run (e.g. no black-box attack) is listed as not checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from training.attacks.registry import attack_kind
from training.robustness.results import (
    CHECKS,
    CellResult,
    Check,
    MaskingDiagnostics,
    MaskingFlag,
)
from training.stats import mcnemar_exact_p

#: family-wise significance level of each check (split over its comparisons)
ALPHA = 0.05
#: ε (pixel units) from which a gradient attack should leave ~0 robust accuracy
HUGE_EPSILON = 64.0
#: "~0": a robust accuracy whose 95 % Wilson interval lies above this is not ~0
RESIDUAL_ACCURACY = 0.01
#: a PGD-vs-APGD difference at least this large (points) is a "large gap"
GAP_POINTS = 5.0

WHITE_BOX = ("single-step", "iterative", "adaptive")
GRADIENT_SEARCH = ("iterative", "adaptive", "ensemble")
STRONG = ("adaptive", "ensemble")

Correct = Mapping[tuple[str, str, float], np.ndarray]


@dataclass(frozen=True)
class _Paired:
    """Two cells of one model on the same images, where ``second`` should fool no more images
    than ``first`` does; a check fires when it significantly does."""

    model: str
    first: CellResult
    second: CellResult
    only_first_fooled: int
    only_second_fooled: int

    @property
    def p(self) -> float:
        return mcnemar_exact_p(self.only_first_fooled, self.only_second_fooled)

    def fires(self, level: float) -> bool:
        return self.only_second_fooled > self.only_first_fooled and self.p < level


def _paired(first: CellResult, second: CellResult, correct: Correct) -> _Paired:
    ok_first = correct[(first.model, first.attack, first.epsilon)]
    ok_second = correct[(second.model, second.attack, second.epsilon)]
    return _Paired(
        first.model,
        first,
        second,
        only_first_fooled=int((~ok_first & ok_second).sum()),
        only_second_fooled=int((ok_first & ~ok_second).sum()),
    )


def diagnose(cells: Sequence[CellResult], correct: Correct) -> MaskingDiagnostics:
    """Run every check on a report's cells; ``correct[(model, attack, ε)]`` holds, per image,
    whether the model was still right under that attack (the report's paired outcomes)."""
    kinds = {c.attack: attack_kind(c.attack) for c in cells}
    groups: dict[tuple[str, float], list[CellResult]] = {}
    for cell in cells:
        if cell.epsilon > 0:
            groups.setdefault((cell.model, cell.epsilon), []).append(cell)

    def of_kind(group: list[CellResult], wanted: Sequence[str]) -> list[CellResult]:
        return [c for c in group if kinds[c.attack] in wanted]

    pairs: dict[Check, list[_Paired]] = {check: [] for check in CHECKS}
    for group in groups.values():
        for single, other in itertools.product(
            of_kind(group, ["single-step"]), of_kind(group, GRADIENT_SEARCH)
        ):
            pairs["single_step_stronger"].append(_paired(other, single, correct))
        white = of_kind(group, WHITE_BOX)
        if white:
            strongest = min(white, key=lambda c: c.robust_accuracy)
            for square in of_kind(group, ["black-box"]):
                pairs["black_box_stronger"].append(_paired(strongest, square, correct))
        for classic, strong in itertools.product(
            of_kind(group, ["iterative"]), of_kind(group, STRONG)
        ):
            if 100 * (classic.robust_accuracy - strong.robust_accuracy) >= GAP_POINTS:
                pairs["pgd_apgd_gap"].append(_paired(classic, strong, correct))
    for sweep in _sweeps(cells).values():
        for smaller, larger in itertools.pairwise(sweep):
            pairs["accuracy_rises_with_epsilon"].append(_paired(larger, smaller, correct))

    flags = []
    for check, candidates in pairs.items():
        level = ALPHA / max(len(candidates), 1)
        flags += [_flag(check, pair, level) for pair in candidates if pair.fires(level)]
    flags += _huge_epsilon_flags(cells, kinds)
    return MaskingDiagnostics(flags=flags, not_checked=_not_checked(cells, kinds, pairs))


def _sweeps(cells: Sequence[CellResult]) -> dict[tuple[str, str], list[CellResult]]:
    """Each (model, attack)'s cells in increasing ε, ε = 0 (clean) included."""
    sweeps: dict[tuple[str, str], list[CellResult]] = {}
    for cell in sorted(cells, key=lambda c: c.epsilon):
        sweeps.setdefault((cell.model, cell.attack), []).append(cell)
    return sweeps


def _percent(cell: CellResult) -> str:
    return f"{cell.attack} {100 * cell.robust_accuracy:.1f} %"


def _flag(check: Check, pair: _Paired, level: float) -> MaskingFlag:
    first, second = pair.first, pair.second
    eps = first.epsilon
    finding = {
        "single_step_stronger": f"FGSM fools more images than {first.attack} at ε={eps:g}",
        "black_box_stronger": (
            f"Square fools more images than the strongest white-box attack ({first.attack}) "
            f"at ε={eps:g}"
        ),
        "pgd_apgd_gap": (
            f"{first.attack} leaves "
            f"{100 * (first.robust_accuracy - second.robust_accuracy):.1f} points more robust "
            f"accuracy than {second.attack} at ε={eps:g}"
        ),
        "accuracy_rises_with_epsilon": (
            f"{first.attack} robust accuracy rises from ε={second.epsilon:g} to ε={eps:g}"
        ),
    }[check]
    if check == "accuracy_rises_with_epsilon":
        numbers = f"{100 * second.robust_accuracy:.1f} % → {100 * first.robust_accuracy:.1f} %"
    else:
        numbers = f"robust accuracy {_percent(first)} vs {_percent(second)}"
    return MaskingFlag(
        check=check,
        model=pair.model,
        epsilon=eps,
        message=f"{pair.model}: {finding} ({numbers}; McNemar p={pair.p:.2g} < {level:.2g})",
        evidence={
            "attack_a": first.attack,
            "epsilon_a": first.epsilon,
            "robust_accuracy_a": first.robust_accuracy,
            "attack_b": second.attack,
            "epsilon_b": second.epsilon,
            "robust_accuracy_b": second.robust_accuracy,
            "only_a_fooled": pair.only_first_fooled,
            "only_b_fooled": pair.only_second_fooled,
            "n": first.n,
            "mcnemar_p": pair.p,
            "level": level,
        },
    )


def _huge_epsilon_flags(
    cells: Sequence[CellResult], kinds: Mapping[str, str | None]
) -> list[MaskingFlag]:
    flags = []
    for cell in cells:
        if cell.epsilon < HUGE_EPSILON or kinds[cell.attack] not in GRADIENT_SEARCH:
            continue
        low, _ = cell.robust_accuracy_ci95
        if low > RESIDUAL_ACCURACY:
            flags.append(
                MaskingFlag(
                    check="not_zero_at_huge_epsilon",
                    model=cell.model,
                    epsilon=cell.epsilon,
                    message=(
                        f"{cell.model}: {cell.attack} leaves {100 * cell.robust_accuracy:.1f} % "
                        f"robust accuracy at ε={cell.epsilon:g} (95 % interval from "
                        f"{100 * low:.1f} %, above ~0 = {100 * RESIDUAL_ACCURACY:g} %)"
                    ),
                    evidence={
                        "attack": cell.attack,
                        "robust_accuracy": cell.robust_accuracy,
                        "ci95_low": low,
                        "n": cell.n,
                        "threshold": RESIDUAL_ACCURACY,
                    },
                )
            )
    return flags


def _not_checked(
    cells: Sequence[CellResult],
    kinds: Mapping[str, str | None],
    pairs: Mapping[Check, list[_Paired]],
) -> dict[str, str]:
    present = set(kinds.values())
    missing: dict[str, str] = {}
    if "single-step" not in present or not present & set(GRADIENT_SEARCH):
        missing["single_step_stronger"] = "needs FGSM and an iterative attack at the same ε"
    if "black-box" not in present or not present & set(WHITE_BOX):
        missing["black_box_stronger"] = "needs Square and a white-box attack at the same ε"
    if "iterative" not in present or not present & set(STRONG):
        missing["pgd_apgd_gap"] = "needs PGD/BIM/MIM and APGD or AutoAttack at the same ε"
    huge = [c for c in cells if c.epsilon >= HUGE_EPSILON and kinds[c.attack] in GRADIENT_SEARCH]
    if not huge:
        missing["not_zero_at_huge_epsilon"] = (
            f"needs an iterative attack at ε ≥ {HUGE_EPSILON:g} (add it to the sweep)"
        )
    if not pairs["accuracy_rises_with_epsilon"]:
        missing["accuracy_rises_with_epsilon"] = "needs two ε of the same attack"
    return missing
