"""Sanity of the attacks as a robustness measurement, on a briefly trained tiny CNN."""

from __future__ import annotations

import pytest

from tests.support.tiny_models import accuracy, small_cnn, synthetic
from training.attacks import FGSM, PGDLinf

EPSILONS = (0.0, 8.0, 64.0)


@pytest.fixture(scope="module")
def evaluation():
    return synthetic(48, seed=31)


@pytest.mark.parametrize("make", [FGSM, lambda eps: PGDLinf(eps, steps=5)], ids=["fgsm", "pgd"])
def test_accuracy_falls_with_epsilon(make, evaluation):
    x, y = evaluation
    model = small_cnn()
    clean = accuracy(model, x, y)
    curve = [accuracy(model, make(eps).generate(model, x, y), y) for eps in EPSILONS]
    print(f"clean {clean:.3f}, accuracy at eps {EPSILONS}: {curve}")
    assert clean >= 0.8  # the model learned the task, so the check means something
    assert curve[0] == clean
    tolerance = 2 / len(x)
    assert all(b <= a + tolerance for a, b in zip(curve, curve[1:], strict=False))


def test_pgd_at_large_epsilon_breaks_the_model(evaluation):
    x, y = evaluation
    model = small_cnn()
    clean = accuracy(model, x, y)
    robust = accuracy(model, PGDLinf(64.0, steps=10, restarts=2).generate(model, x, y), y)
    fgsm = accuracy(model, FGSM(64.0).generate(model, x, y), y)
    print(f"clean {clean:.3f}, FGSM(64) {fgsm:.3f}, PGD(64) {robust:.3f}")
    assert robust <= clean
    assert robust < 0.5 * clean
    assert robust <= fgsm + 2 / len(x)  # iterating should not be weaker than one step
