"""Properties every built-in attack must have, on a tiny trained CNN."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.tiny_models import NUM_CLASSES, small_cnn, synthetic
from training import gradients
from training.attacks import BIM, FGSM, MIM, PGDL2, AttackError, PGDLinf, make_attack
from training.attacks._common import fooled

LINF = {
    "fgsm": lambda eps, **kw: FGSM(eps, **kw),
    "pgd": lambda eps, **kw: PGDLinf(eps, steps=4, **kw),
    "bim": lambda eps, **kw: BIM(eps, steps=4, **kw),
    "mim": lambda eps, **kw: MIM(eps, steps=4, **kw),
}
L2 = {"pgd_l2": lambda eps, **kw: PGDL2(eps, steps=4, **kw)}
ALL = {**LINF, **L2}
RANDOM_START = ["pgd", "pgd_l2"]
EPSILON = {"fgsm": 8.0, "pgd": 8.0, "bim": 8.0, "mim": 8.0, "pgd_l2": 400.0}


@pytest.fixture(scope="module")
def batch():
    return synthetic(6, seed=11)


def attack(name, epsilon=None, **params):
    return ALL[name](EPSILON[name] if epsilon is None else epsilon, **params)


@pytest.mark.parametrize("name", list(ALL))
def test_output_in_range_within_budget_and_float32(name, batch):
    x, y = batch
    x_adv = attack(name).generate(small_cnn(), x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0.0 and x_adv.max() <= 255.0
    delta = (x_adv - x).reshape(len(x), -1)
    if name in LINF:
        assert np.abs(delta).max() <= EPSILON[name] + 1e-4
        assert np.abs(delta).max() > 0
    else:
        assert np.linalg.norm(delta, axis=1).max() <= EPSILON[name] * (1 + 1e-5) + 1e-4
        assert np.linalg.norm(delta, axis=1).min() > 0


@pytest.mark.parametrize("name", list(ALL))
def test_zero_epsilon_returns_the_input(name, batch):
    x, y = batch
    np.testing.assert_array_equal(attack(name, 0.0).generate(small_cnn(), x, y), x)


@pytest.mark.parametrize("name", list(ALL))
def test_same_seed_same_result(name, batch):
    x, y = batch
    first = attack(name, seed=3).generate(small_cnn(), x, y)
    np.testing.assert_array_equal(first, attack(name, seed=3).generate(small_cnn(), x, y))


@pytest.mark.parametrize("name", RANDOM_START)
def test_other_seed_other_random_start(name, batch):
    x, y = batch
    first = attack(name, seed=3).generate(small_cnn(), x, y)
    assert not np.allclose(first, attack(name, seed=4).generate(small_cnn(), x, y))


@pytest.mark.parametrize("name", list(ALL))
def test_per_sample_result_does_not_depend_on_the_batch(name, batch):
    x, y = batch
    together = attack(name, seed=5).generate(small_cnn(), x, y, sample_ids=np.arange(6))
    alone = attack(name, seed=5).generate(small_cnn(), x[3:], y[3:], sample_ids=np.arange(3, 6))
    np.testing.assert_allclose(together[3:], alone, atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", RANDOM_START)
def test_sample_ids_drive_the_random_start(name, batch):
    x, y = batch
    a = attack(name, seed=5).generate(small_cnn(), x, y, sample_ids=np.arange(6))
    b = attack(name, seed=5).generate(small_cnn(), x, y, sample_ids=np.arange(10, 16))
    assert not np.allclose(a, b)


@pytest.mark.parametrize("name", list(ALL))
def test_targeted_raises_the_target_probability(name, batch):
    x, _ = batch
    model = small_cnn()
    clean_logits = gradients.logits(model, x)
    target = (np.argmax(clean_logits, axis=1) + 1) % NUM_CLASSES
    x_adv = attack(name, 4 * EPSILON[name], targeted=True).generate(model, x, target)

    def target_share(logits):
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True))[np.arange(len(x)), target]

    before, after = target_share(clean_logits), target_share(gradients.logits(model, x_adv))
    print(f"{name}: target share {before.mean():.3f} -> {after.mean():.3f}")
    assert after.mean() > before.mean() + 0.05
    assert np.mean(after > before) >= 0.5


@pytest.mark.parametrize("name", list(ALL))
def test_untargeted_raises_the_loss(name, batch):
    x, y = batch
    model = small_cnn()
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]

    def loss(pixels):
        logits = gradients.logits(model, pixels)
        logits = logits - logits.max(axis=1, keepdims=True)
        return -(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))[onehot > 0]

    assert loss(attack(name).generate(model, x, y)).mean() > loss(x).mean()


@pytest.mark.parametrize("random_start", [False, True])
def test_restarts_keep_the_first_fooling_restart_else_the_last(random_start, batch):
    x, y = batch
    model = small_cnn()
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    pgd = PGDLinf(3.0, steps=2, restarts=3, random_start=random_start, seed=1)
    ids = np.arange(len(x))
    runs = [pgd._run(model, x, onehot, ids, r) for r in range(3)]
    expected = runs[2].copy()
    for run in reversed(runs[:2]):
        success = fooled(gradients.logits(model, run), onehot, targeted=False)
        expected[success] = run[success]
    np.testing.assert_allclose(pgd.generate(model, x, y), expected, atol=1e-5, rtol=0)
    single = PGDLinf(3.0, steps=2, restarts=1, random_start=random_start, seed=1)
    np.testing.assert_allclose(single.generate(model, x, y), runs[0], atol=1e-5, rtol=0)
    if random_start:
        assert not np.allclose(pgd._start(x, ids, 0), pgd._start(x, ids, 1))


def test_restarts_do_not_hurt_the_attack(batch):
    x, y = batch
    model = small_cnn()
    once = PGDLinf(3.0, steps=2, restarts=1).generate(model, x, y)
    thrice = PGDLinf(3.0, steps=2, restarts=3).generate(model, x, y)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    once_fooled = fooled(gradients.logits(model, once), onehot, targeted=False)
    assert np.all(fooled(gradients.logits(model, thrice), onehot, targeted=False)[once_fooled])


def test_pgd_l2_random_start_is_inside_the_l2_ball(batch):
    x, _ = batch
    pgd = PGDL2(50.0, steps=1)
    delta = pgd._uniform_in_l2_ball(x.shape[1:], np.arange(200), restart=0).reshape(200, -1)
    norms = np.linalg.norm(delta, axis=1)
    assert (
        norms.max() <= 50.0 * (1 + 1e-5) and norms.min() > 45.0
    )  # mass near the surface in 3072-d


def test_mim_without_momentum_is_bim(batch):
    x, y = batch
    np.testing.assert_array_equal(
        MIM(8.0, steps=4, decay=0.0).generate(small_cnn(), x, y),
        BIM(8.0, steps=4).generate(small_cnn(), x, y),
    )


@pytest.mark.parametrize("cls", [PGDLinf, PGDL2, BIM, MIM])
def test_default_step_size_is_madrys_rule(cls):
    assert cls(8.0, steps=4).step_size == pytest.approx(2.5 * 8.0 / 4)
    assert cls(8.0, step_size=1.5, steps=4).step_size == 1.5


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (FGSM, {"epsilon": -1.0}, "epsilon"),
        (FGSM, {"epsilon": float("nan")}, "epsilon"),
        (PGDLinf, {"epsilon": 8, "step_size": 0}, "step_size"),
        (PGDLinf, {"epsilon": 8, "step_size": -1.0}, "step_size"),
        (PGDLinf, {"epsilon": 8, "step_size": float("inf")}, "step_size"),
        (PGDLinf, {"epsilon": 8, "steps": 0}, "steps"),
        (PGDLinf, {"epsilon": 8, "steps": 2.5}, "steps"),
        (PGDLinf, {"epsilon": 8, "steps": True}, "steps"),
        (PGDLinf, {"epsilon": 8, "restarts": 0}, "restarts"),
        (PGDL2, {"epsilon": 8, "restarts": -2}, "restarts"),
        (PGDL2, {"epsilon": 8, "step_size": 0.0}, "step_size"),
        (BIM, {"epsilon": 8, "steps": 0}, "steps"),
        (MIM, {"epsilon": 8, "decay": -0.5}, "decay"),
        (MIM, {"epsilon": 8, "decay": float("nan")}, "decay"),
        (MIM, {"epsilon": 8, "steps": -1}, "steps"),
        (PGDLinf, {"epsilon": 8, "clip_min": 255, "clip_max": 0}, "clip_min"),
    ],
)
def test_bad_parameters_raise_attack_error(cls, params, message):
    with pytest.raises(AttackError, match=message):
        cls(**params)


def test_params_are_json_safe_and_complete():
    import json

    params = make_attack("pgd", epsilon=4, steps=3, restarts=2, seed=7).params()
    assert json.loads(json.dumps(params)) == params
    assert params["name"] == "pgd" and params["norm"] == "inf"
    assert params["step_size"] == pytest.approx(2.5 * 4 / 3)
    assert (params["steps"], params["restarts"], params["seed"]) == (3, 2, 7)
    assert make_attack("pgd_l2", epsilon=4).params()["norm"] == "2"
