"""Properties of the strong attacks (APGD-CE/-DLR/-T, Square, AutoAttack) on tiny models.

The random-init ResNet of :mod:`tests.support.tiny_models` is easy to fool at small ε, so it
tells an attack that searches from one that does nothing; the trained CNN (3 classes) checks the
targeted path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.tiny_models import (
    NUM_CLASSES,
    correct,
    resnet,
    resnet_batch,
    small_cnn,
    synthetic,
)
from training import gradients
from training.attacks import APGDCE, APGDDLR, APGDT, AttackError, AutoAttack, Square, make_attack
from training.attacks.apgd import checkpoints
from training.attacks.losses import cross_entropy, dlr
from training.attacks.square import margin, window_fraction

EPSILON = 0.5  # pixel units: APGD fools part of resnet_batch(), not all of it
SQUARE_EPSILON = 2.0  # a black-box search needs more room for the same effect in 100 queries
STRONG = {
    "apgd_ce": lambda **kw: APGDCE(EPSILON, steps=8, **kw),
    "apgd_dlr": lambda **kw: APGDDLR(EPSILON, steps=8, **kw),
    "square": lambda **kw: Square(SQUARE_EPSILON, queries=100, **kw),
    "autoattack": lambda **kw: AutoAttack(
        EPSILON, parts="apgd_ce,apgd_dlr,square", steps=8, queries=40, **kw
    ),
}


@pytest.fixture(scope="module")
def batch():
    return resnet_batch()


@pytest.fixture(scope="module")
def outputs(batch):
    x, y = batch
    return {name: make(seed=3).generate(resnet(), x, y) for name, make in STRONG.items()}


@pytest.mark.parametrize("name", list(STRONG))
def test_output_in_range_within_budget_and_float32(name, batch, outputs):
    x, _ = batch
    x_adv = outputs[name]
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0.0 and x_adv.max() <= 255.0
    assert np.abs(x_adv - x).max() <= (SQUARE_EPSILON if name == "square" else EPSILON) + 1e-4


@pytest.mark.parametrize("name", list(STRONG))
def test_attack_fools_some_images_and_never_unfools_one(name, batch, outputs):
    x, y = batch
    clean, robust = correct(resnet(), x, y), correct(resnet(), outputs[name], y)
    print(f"{name}: accuracy {clean.mean():.3f} -> {robust.mean():.3f}")
    assert robust.sum() < clean.sum()
    assert not np.any(robust & ~clean)  # a misclassified image stays misclassified


@pytest.mark.parametrize("name", list(STRONG))
def test_same_seed_same_result_whatever_the_position_in_the_batch(name, batch, outputs):
    """An image's search follows its sample id, not its neighbours: the batch shuffled gives each
    image the same adversarial example. The batch keeps its size (and, since every image's search
    is the same, every attack step keeps its sub-batch sizes): on some CPUs (AMD, AVX2) oneDNN
    picks other kernels for another batch size, whose rounding (~1e-7 relative on the logits) can
    flip Square's accept decision on a near-tie late in the search, which is not cross-talk."""
    x, y = batch
    order = np.random.default_rng(0).permutation(len(x))
    again = STRONG[name](seed=3).generate(resnet(), x[order], y[order], sample_ids=order)
    np.testing.assert_allclose(again, outputs[name][order], atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", ["apgd_ce", "square"])
def test_other_seed_other_search(name, batch, outputs):
    x, y = batch
    assert not np.allclose(STRONG[name](seed=4).generate(resnet(), x, y), outputs[name])


def test_zero_epsilon_returns_the_input(batch):
    x, y = batch
    for make in (APGDCE, APGDDLR, Square, AutoAttack):
        np.testing.assert_array_equal(make(0.0).generate(resnet(), x, y), x)


def test_apgd_ends_at_least_as_high_as_it_starts(batch):
    """APGD keeps its best iterate, so its objective never ends below the start's."""
    x, y = batch
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    model = resnet()
    for cls, loss in ((APGDCE, cross_entropy), (APGDDLR, dlr)):
        attack = cls(EPSILON, steps=6, seed=1)
        start = attack._start(x, np.arange(len(x)), 0)
        end = attack._run(model, x, onehot, onehot, start)
        before = np.asarray(loss(gradients.logits(model, start), onehot))
        after = np.asarray(loss(gradients.logits(model, end), onehot))
        fooled = ~correct(model, end, y)
        assert np.all((after >= before - 1e-5) | fooled), cls.name


def test_square_never_raises_its_margin_over_the_stripes(batch):
    """Square accepts a proposal only when the margin falls: its result's margin is at most the
    stripe start's (one query) for every image."""
    x, y = batch
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    model = resnet()
    start = Square(EPSILON, queries=1, seed=2).generate(model, x, y)
    end = Square(EPSILON, queries=30, seed=2).generate(model, x, y)
    before = margin(gradients.logits(model, start), onehot, targeted=False)
    after = margin(gradients.logits(model, end), onehot, targeted=False)
    assert np.all(after <= before + 1e-5) and np.any(after < before - 1e-3)
    signs = np.sign(start - x)  # vertical stripes: one sign down each column (0 where clipped)
    assert not np.any(np.any(signs > 0, axis=1) & np.any(signs < 0, axis=1))


def test_autoattack_is_the_worst_case_of_its_parts(batch, outputs):
    x, y = batch
    model = resnet()
    robust = correct(model, outputs["autoattack"], y)
    for part in AutoAttack(
        EPSILON, parts="apgd_ce,apgd_dlr,square", steps=8, queries=40, seed=3
    ).components():
        assert not np.any(robust & ~correct(model, part.generate(model, x, y), y)), part.name


@pytest.mark.parametrize("cls", [APGDCE, Square])
def test_targeted_reaches_targets(cls):
    x, _ = synthetic(6, seed=11)
    model = small_cnn()
    target = (np.argmax(gradients.logits(model, x), axis=1) + 1) % NUM_CLASSES
    params = {"steps": 20} if cls is APGDCE else {"queries": 200}
    x_adv = cls(60.0, targeted=True, **params).generate(model, x, target)
    hit = np.argmax(gradients.logits(model, x_adv), axis=1) == target
    print(f"{cls.name}: {hit.mean():.2f} of the images reach their target")
    assert hit.mean() >= 0.5


def test_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .7, .8, .87, .93, .99 (each gap shrinks by .03, at least .06)
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]


def test_square_window_fraction_halves_on_schedule():
    assert window_fraction(0, 10_000, 0.8) == 0.8
    assert window_fraction(10, 10_000, 0.8) == 0.4
    assert window_fraction(8000, 10_000, 0.8) == pytest.approx(0.8 / 512)
    assert window_fraction(50, 500, 0.8) == window_fraction(1000, 10_000, 0.8)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("apgd_ce", {"steps": 0}, "steps"),
        ("apgd_dlr", {"targeted": True}, "untargeted"),
        ("apgd_t", {"targets": 0}, "targets"),
        ("apgd_t", {"targeted": True}, "untargeted"),
        ("square", {"p_init": 0.0}, "p_init"),
        ("square", {"queries": 1.5}, "queries"),
        ("autoattack", {"parts": "apgd_ce,fab"}, "parts"),
        ("autoattack", {"parts": "square,square"}, "parts"),
        ("autoattack", {"targeted": True}, "untargeted"),
    ],
)
def test_bad_parameters_raise_attack_error(name, params, message):
    with pytest.raises(AttackError, match=message):
        make_attack(name, epsilon=2, **params)


def test_losses_that_need_more_classes_say_so(batch):
    x, y = batch  # a 3-class model: targeted DLR needs 4
    with pytest.raises(AttackError, match="at least 4 classes"):
        APGDT(EPSILON, steps=2).generate(resnet(), x, y)


def test_registry_names_and_json_safe_params():
    for name in ("apgd-ce", "APGD_DLR", "apgd_t", "square", "autoattack"):
        params = make_attack(name, epsilon=2, seed=7).params()
        assert json.loads(json.dumps(params)) == params and params["norm"] == "inf"
    assert make_attack("autoattack", epsilon=2).params()["parts"] == "apgd_ce,apgd_t,square"


def test_autoattack_on_a_binary_model_runs_the_parts_whose_loss_is_defined():
    """APGD-T and APGD-DLR rank three or more logits; with two classes the standard ensemble
    is APGD-CE → Square, and its result is still the worst case of those two."""
    import keras

    keras.utils.set_random_seed(0)
    pixels = keras.Input((8, 8, 3))
    hidden = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(pixels))
    model = keras.Model(pixels, keras.layers.Dense(2)(hidden))
    x = np.random.default_rng(1).uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)
    y = np.argmax(gradients.logits(model, x), axis=1)
    attack = AutoAttack(8.0, steps=5, queries=20)
    assert [part.name for part in attack.components(num_classes=2)] == ["apgd_ce", "square"]
    assert [part.name for part in attack.components(num_classes=7)] == [
        "apgd_ce",
        "apgd_t",
        "square",
    ]
    x_adv = attack.generate(model, x, y)
    assert np.abs(x_adv - x).max() <= 8.0 + 1e-4
    parts = [part.generate(model, x, y) for part in attack.components(num_classes=2)]
    robust_parts = np.logical_and.reduce([correct(model, p, y) for p in parts])
    assert not (correct(model, x_adv, y) & ~robust_parts).any()
