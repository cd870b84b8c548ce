"""The evaluation request's own bounds: what a job submission cannot ask for."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.robustness.spec import MAX_PARAMETER, AttackSpec, EvaluationSpec


@pytest.mark.parametrize("value", [10**400, float("nan"), float("inf"), -(MAX_PARAMETER + 1)])
def test_attack_parameters_are_finite_and_bounded(value):
    with pytest.raises(ValidationError, match="finite and"):
        AttackSpec(name="pgd", params={"steps": value})


def test_ordinary_attack_parameters_pass():
    spec = AttackSpec(name="pgd", params={"steps": MAX_PARAMETER, "targeted": True, "x": "y"})
    assert spec.params["steps"] == MAX_PARAMETER


@pytest.mark.parametrize(
    "fields",
    [
        {"epsilons": [float(e) for e in range(65)]},
        {"attacks": [{"name": "fgsm"}] * 17},
        {"batch_size": 4097},
        {"epsilons": [float("nan")]},
    ],
)
def test_sweeps_are_bounded(fields):
    base = {"attacks": [{"name": "fgsm"}], "epsilons": [1.0]}
    with pytest.raises(ValidationError):
        EvaluationSpec.model_validate({**base, **fields})
