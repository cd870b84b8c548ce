"""Gradient-masking checks: each fires on a model built to mask gradients, none on a normal one.

The masked models wrap the same small trained CNN behind an input layer that changes only what
an attacker's gradient sees, never the prediction of an unperturbed image:

* ``Quantise``: pixels rounded to multiples of 32 behind a stop-gradient (shattered gradients,
  Athalye et al. 2018): every gradient is zero, so only the black-box Square attack gets anywhere.
* ``GridOnlyGradient``: identity forward; the gradient is right on the integer pixel grid (where
  clean images and FGSM's integer steps land) and negated off it (where PGD's random start and
  fractional steps land): FGSM beats PGD, APGD's adaptive steps beat PGD, and BIM with a
  fractional step (ε=66, 4 steps) does worse than with an integer one (ε=64).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
from keras import ops

from tests.support.tiny_models import NUM_CLASSES, SIZE, small_cnn, synthetic
from training.model_ref import ModelIdentity
from training.robustness.render import markdown_table, robustness_curve_png
from training.robustness.report import build_report
from training.robustness.results import AdversarialOutcomes, RobustnessReport, ShardResult
from training.robustness.run import evaluate
from training.robustness.spec import AttackSpec, EvaluationSpec

pytestmark = pytest.mark.slow
CLASSES = [str(k) for k in range(NUM_CLASSES)]

SPEC = EvaluationSpec(
    attacks=[
        AttackSpec(name="fgsm"),
        AttackSpec(name="pgd", params={"steps": 10}),
        AttackSpec(name="apgd_ce", params={"steps": 20}),
        AttackSpec(name="square", params={"queries": 300}),
    ],
    epsilons=[0, 4, 16, 64],
    batch_size=96,
)
BIM_SPEC = EvaluationSpec(
    attacks=[AttackSpec(name="bim", params={"steps": 4})], epsilons=[0, 64, 66], batch_size=96
)


class Quantise(keras.layers.Layer):
    """Pixels rounded to multiples of ``step``, with no gradient at all."""

    def __init__(self, step: float = 32.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.step = step

    def call(self, x):
        return ops.stop_gradient(ops.round(x / self.step) * self.step)


class GridOnlyGradient(keras.layers.Layer):
    """Identity forward; the gradient is kept on the integer grid and negated off it."""

    def call(self, x):
        fixed = ops.stop_gradient(x)
        on_grid = ops.stop_gradient(ops.cast(ops.abs(x - ops.round(x)) < 1e-3, x.dtype))
        return fixed + (2.0 * on_grid - 1.0) * (x - fixed)


def _behind(layer: keras.layers.Layer) -> keras.Model:
    pixels = keras.Input((SIZE, SIZE, 3))
    return keras.Model(pixels, small_cnn()(layer(pixels)))


@functools.cache
def _images() -> tuple[np.ndarray, np.ndarray]:
    x, y = synthetic(96, seed=11)
    return np.round(x).astype(np.float32), y  # on the integer grid, like decoded images


def _report(model: keras.Model, spec: EvaluationSpec = SPEC) -> RobustnessReport:
    x, y = _images()
    identity = ModelIdentity(name="m", version=1, weights_sha256="0" * 64)
    return evaluate([(identity, model)], x, y, CLASSES, spec, "test")


def _fired(report: RobustnessReport) -> set[str]:
    return {flag.check for flag in report.masking.flags}


def test_a_normal_model_raises_no_flag():
    for spec in (SPEC, BIM_SPEC):
        report = _report(small_cnn(), spec)
        assert report.masking.flags == [], [f.message for f in report.masking.flags]
    assert report.masking.not_checked.keys() >= {"single_step_stronger", "black_box_stronger"}


def test_zero_gradients_flag_black_box_stronger_and_not_zero_at_huge_epsilon():
    report = _report(_behind(Quantise()))
    assert _fired(report) == {"black_box_stronger", "not_zero_at_huge_epsilon"}
    black_box = next(f for f in report.masking.flags if f.check == "black_box_stronger")
    assert black_box.epsilon == 64 and black_box.evidence["attack_b"] == "square"
    assert black_box.evidence["robust_accuracy_b"] < black_box.evidence["robust_accuracy_a"]
    assert report.masking.not_checked == {}


def test_off_grid_gradients_flag_single_step_stronger_and_the_pgd_apgd_gap():
    report = _report(_behind(GridOnlyGradient()))
    assert {"single_step_stronger", "pgd_apgd_gap", "not_zero_at_huge_epsilon"} <= _fired(report)
    gap = next(f for f in report.masking.flags if f.check == "pgd_apgd_gap")
    assert (gap.evidence["attack_a"], gap.evidence["attack_b"]) == ("pgd", "apgd_ce")
    assert gap.evidence["robust_accuracy_a"] - gap.evidence["robust_accuracy_b"] >= 0.05


def test_off_grid_gradients_flag_accuracy_rising_with_epsilon():
    report = _report(_behind(GridOnlyGradient()), BIM_SPEC)
    rising = [f for f in report.masking.flags if f.check == "accuracy_rises_with_epsilon"]
    assert [(f.evidence["epsilon_b"], f.epsilon) for f in rising] == [(64, 66)]
    assert (
        report.cell("m:1", "bim", 66).robust_accuracy
        > report.cell("m:1", "bim", 64).robust_accuracy
    )


def test_flags_show_in_the_markdown_and_the_png():
    report = _report(_behind(Quantise()))
    table = markdown_table(report)
    for flag in report.masking.flags:
        assert flag.message in table
    assert robustness_curve_png(report).startswith(b"\x89PNG")


def _outcomes(fooled: dict[tuple[str, float], list[int]], n: int) -> ShardResult:
    """A one-model shard where every image is right unless listed as fooled by (attack, ε)."""
    labels = [0] * n
    attacks = sorted({attack for attack, _ in fooled})
    epsilons = sorted({eps for _, eps in fooled})
    cells = [
        AdversarialOutcomes(
            model="m:1",
            attack=attack,
            epsilon=eps,
            predictions=[int(i in fooled.get((attack, eps), [])) for i in range(n)],
            linf=[0.0] * n,
            l2=[0.0] * n,
        )
        for attack in attacks
        for eps in epsilons
    ]
    return ShardResult(
        spec=EvaluationSpec(attacks=[AttackSpec(name=a) for a in attacks], epsilons=epsilons),
        models=[ModelIdentity(name="m", version=1, weights_sha256="0" * 64)],
        class_names=["a", "b"],
        sample_ids=list(range(n)),
        labels=labels,
        clean_predictions={"m:1": labels},
        adversarial=cells,
    )


def test_a_difference_within_sampling_noise_raises_no_flag():
    """FGSM fooling 4 images PGD missed (of 40) is p = 0.125 by McNemar: no flag."""
    shard = _outcomes({("fgsm", 4.0): [0, 1, 2, 3], ("pgd", 4.0): []}, n=40)
    assert build_report(shard, "test").masking.flags == []


def test_the_same_difference_on_many_images_flags():
    """FGSM fooling 12 images PGD missed: p = 4.9e-4, below 0.05 over one comparison."""
    shard = _outcomes({("fgsm", 4.0): list(range(12)), ("pgd", 4.0): []}, n=40)
    (flag,) = build_report(shard, "test").masking.flags
    assert flag.check == "single_step_stronger"
    assert flag.evidence["only_b_fooled"] == 12 and flag.evidence["only_a_fooled"] == 0


def test_the_level_is_split_over_the_comparisons_of_a_check():
    """8 images fooled at ε=1 but not at ε=2: p = 0.0078 passes α = 0.05 alone, but not
    split over the 15 ε steps of a 16-point sweep (0.0033)."""
    eight = list(range(8))
    single = _outcomes({("pgd", 1.0): eight, ("pgd", 2.0): []}, n=40)
    assert {f.check for f in build_report(single, "test").masking.flags} == {
        "accuracy_rises_with_epsilon"
    }
    many = {("pgd", float(e)): ([] if e == 16 else eight) for e in range(1, 17)}
    assert build_report(_outcomes(many, n=40), "test").masking.flags == []


def test_what_a_sweep_cannot_check_is_said():
    shard = _outcomes({("pgd", 4.0): []}, n=10)
    missing = build_report(shard, "test").masking.not_checked
    assert set(missing) == {
        "single_step_stronger",
        "black_box_stronger",
        "pgd_apgd_gap",
        "not_zero_at_huge_epsilon",
        "accuracy_rises_with_epsilon",
    }
