"""Attacks by name, and ART attacks through the adapter."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.support.tiny_models import small_cnn, synthetic
from training.attacks import (
    BIM,
    FGSM,
    MIM,
    PGDL2,
    ARTAttack,
    Attack,
    AttackError,
    PGDLinf,
    available_attacks,
    make_attack,
)


def test_builtin_names():
    assert available_attacks() == [
        "fgsm", "pgd", "pgd_l2", "bim", "mim", "apgd_ce", "apgd_dlr", "apgd_t", "square",
        "autoattack",
    ]  # fmt: skip
    expected = {"fgsm": FGSM, "pgd": PGDLinf, "pgd_l2": PGDL2, "bim": BIM, "mim": MIM}
    for name, cls in expected.items():
        attack = make_attack(name, epsilon=2.0, seed=1)
        assert type(attack) is cls and isinstance(attack, Attack)
        assert attack.name == name and attack.epsilon == 2.0 and attack.seed == 1
    assert isinstance(make_attack("PGD", epsilon=1), PGDLinf)  # case-insensitive


def test_registry_passes_and_validates_parameters():
    attack = make_attack("mim", epsilon=4, steps=3, decay=0.5, step_size=1.0, targeted=True)
    assert (attack.steps, attack.decay, attack.step_size, attack.targeted) == (3, 0.5, 1.0, True)
    with pytest.raises(AttackError, match="unknown parameter"):
        make_attack("fgsm", epsilon=1, steps=3)
    with pytest.raises(AttackError, match="epsilon is required"):
        make_attack("pgd", steps=3)
    with pytest.raises(AttackError, match="steps"):
        make_attack("bim", epsilon=1, steps=0)


def test_unknown_name_lists_the_choices():
    with pytest.raises(AttackError, match="fgsm, pgd, pgd_l2, bim, mim") as error:
        make_attack("not_an_attack", epsilon=1)
    assert "unknown attack 'not_an_attack'" in str(error.value)


def test_missing_art_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "art.attacks.evasion", None)  # makes the import fail
    with pytest.raises(AttackError, match="pip install adversarial-robustness-toolbox"):
        make_attack("DeepFool", epsilon=1)
    with pytest.raises(AttackError, match="pip install adversarial-robustness-toolbox"):
        ARTAttack("DeepFool")
    assert isinstance(make_attack("fgsm", epsilon=1), FGSM)  # built-ins never need ART


@pytest.fixture(scope="module")
def batch():
    pytest.importorskip("art")
    return synthetic(4, seed=21)


def test_art_deepfool_by_name_runs_and_is_bounded(batch):
    x, y = batch
    attack = make_attack("DeepFool", epsilon=300.0, max_iter=2, nb_grads=3)
    assert isinstance(attack, ARTAttack) and attack.norm == "2"
    x_adv = attack.generate(small_cnn(), x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0 and x_adv.max() <= 255
    assert np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1).max() <= 300.0 * (1 + 1e-5)
    np.testing.assert_array_equal(attack.generate(small_cnn(), x, y), x_adv)
    params = attack.params()
    assert params["art_class_name"] == "DeepFool" and params["art.max_iter"] == 2


def test_art_carlini_l2_unbounded_with_art_prefixed_parameters(batch):
    x, y = batch
    attack = ARTAttack("CarliniL2Method", max_iter=2, binary_search_steps=1, art_batch_size=4)
    assert not attack.bounded and attack.norm == "2"
    x_adv = attack.generate(small_cnn(), x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 255


def test_art_attack_with_eps_gets_epsilon_and_matches_fgsm(batch):
    x, y = batch
    via_art = make_attack("art:FastGradientMethod", epsilon=8.0, minimal=False)
    assert via_art.uses_art_eps and via_art.norm == "inf"
    ours = FGSM(8.0).generate(small_cnn(), x, y)
    np.testing.assert_allclose(via_art.generate(small_cnn(), x, y), ours, atol=1e-4, rtol=0)
    targeted = make_attack("FastGradientMethod", epsilon=8.0, targeted=True)
    np.testing.assert_allclose(
        targeted.generate(small_cnn(), x, y),
        FGSM(8.0, targeted=True).generate(small_cnn(), x, y),
        atol=1e-4,
        rtol=0,
    )


def test_art_zero_epsilon_returns_the_input(batch):
    x, y = batch
    out = make_attack("ProjectedGradientDescent", epsilon=0.0).generate(small_cnn(), x, y)
    np.testing.assert_array_equal(out, x)


def test_art_adapter_validates_at_construction(batch):
    with pytest.raises(AttackError, match="not an ART evasion attack"):
        ARTAttack("NoSuchAttack")
    with pytest.raises(AttackError, match="unknown attack 'NoSuchAttack'.*DeepFool"):
        make_attack("NoSuchAttack", epsilon=1)
    with pytest.raises(AttackError, match="takes no parameter"):
        ARTAttack("DeepFool", max_iterations=3)
    with pytest.raises(AttackError, match="no targeted mode"):
        ARTAttack("DeepFool", targeted=True)
    with pytest.raises(AttackError, match="not both"):
        ARTAttack("FastGradientMethod", epsilon=1.0, eps=2.0)
