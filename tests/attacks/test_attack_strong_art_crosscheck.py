"""APGD-CE/-DLR, Square and AutoAttack against ART's implementations, on real HAM10000 images.

A small CNN trained on 420 class-balanced HAM10000 training images at 32 px (the ``tiny_ham``
fixture: seconds on two cores); both implementations attack the same 140 class-balanced test
images at the same ε.

Tolerance. Both sides are stochastic searches (random starts, random squares) with different
random streams, so they cannot match image for image; what must match is their strength. Each
image gives a pair of outcomes (robust under ours, robust under ART). If the two are equally
strong, each discordant pair (robust under exactly one) is a fair coin, and McNemar's exact test
(:func:`training.stats.mcnemar_exact_p`) bounds how lopsided the discordant pairs may be: the
test fails when p < 0.01, so two equally strong attacks fail it at most 1 % of the time, while a
broken attack fails it for sure (at ε = 4 the attacks fool about 20 of the ~60 correctly
classified images; an attack that fooled none would give 20 one-sided discordant pairs,
p ≈ 2·10⁻⁶). The test also asserts the comparison is meaningful: ART must fool some, not all,
of the correctly classified images.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("art")

from art.attacks.evasion import (  # noqa: E402
    AutoProjectedGradientDescent,
    SquareAttack,
)

from tests.support.art_reference import art_classifier, onehot  # noqa: E402
from tests.support.tiny_models import HAM_CLASSES  # noqa: E402
from training import gradients  # noqa: E402
from training.attacks import make_attack  # noqa: E402
from training.stats import mcnemar_exact_p  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.slow]

EPSILON = 4.0  # pixel units; fools about a third of the correctly classified test images
STEPS, QUERIES = 50, 300
ALPHA = 0.01


def _art_apgd(model, loss_type: str):
    return AutoProjectedGradientDescent(
        art_classifier(model, HAM_CLASSES),
        norm=np.inf,
        eps=EPSILON,
        eps_step=2 * EPSILON,  # η⁽⁰⁾ = 2ε, as in the paper and ours
        max_iter=STEPS,
        nb_random_init=1,
        loss_type=loss_type,
        verbose=False,
    )


def _art_square(model):
    return SquareAttack(
        art_classifier(model, HAM_CLASSES),
        norm=np.inf,
        eps=EPSILON,
        max_iter=QUERIES,
        p_init=0.8,
        verbose=False,
    )


def _robust(model, x_adv: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.argmax(gradients.logits(model, x_adv), axis=1) == y


def _compare(label: str, model, x, y, ours: np.ndarray, reference: np.ndarray) -> None:
    clean = _robust(model, x, y)
    mine, theirs = _robust(model, ours, y), _robust(model, reference, y)
    only_mine, only_theirs = int(np.sum(mine & ~theirs)), int(np.sum(~mine & theirs))
    p = mcnemar_exact_p(only_mine, only_theirs)
    print(
        f"{label}: clean {clean.mean():.3f}, robust ours {mine.mean():.3f} ART "
        f"{theirs.mean():.3f} (n={len(y)}); robust only under ours {only_mine}, only under ART "
        f"{only_theirs}; McNemar p={p:.3g}"
    )
    assert np.abs(ours - x).max() <= EPSILON + 1e-3
    assert 0 < theirs.sum() < clean.sum()  # ART fools some, not all: a meaningful comparison
    assert p >= ALPHA


@pytest.mark.parametrize(
    ("name", "loss_type"), [("apgd_ce", "cross_entropy"), ("apgd_dlr", "difference_logits_ratio")]
)
def test_apgd_matches_art_auto_pgd(tiny_ham, name, loss_type):
    model, x, y = tiny_ham
    ours = make_attack(name, epsilon=EPSILON, steps=STEPS, seed=0).generate(model, x, y)
    np.random.seed(0)  # ART draws its random start from numpy's global generator
    reference = _art_apgd(model, loss_type).generate(x, onehot(y, HAM_CLASSES))
    _compare(name, model, x, y, ours, reference)


def test_square_matches_art_square(tiny_ham):
    model, x, y = tiny_ham
    ours = make_attack("square", epsilon=EPSILON, queries=QUERIES, seed=0).generate(model, x, y)
    np.random.seed(0)
    reference = _art_square(model).generate(x, onehot(y, HAM_CLASSES))
    _compare("square", model, x, y, ours, reference)


def test_autoattack_matches_the_worst_case_of_art_parts(tiny_ham):
    """The same three parts on both sides: APGD-CE, APGD-DLR, Square. ART's own ``AutoAttack``
    class imports the ``multiprocess`` package, which this environment lacks, so the reference
    is what that class computes: per image, the first ART part that fools the model."""
    model, x, y = tiny_ham
    parts = "apgd_ce,apgd_dlr,square"
    ours = make_attack(
        "autoattack", epsilon=EPSILON, parts=parts, steps=STEPS, queries=QUERIES, seed=0
    ).generate(model, x, y)
    reference = x.copy()
    robust = _robust(model, x, y)
    for attack in (
        _art_apgd(model, "cross_entropy"),
        _art_apgd(model, "difference_logits_ratio"),
        _art_square(model),
    ):
        np.random.seed(0)
        x_adv = attack.generate(x, onehot(y, HAM_CLASSES))
        fooled = robust & ~_robust(model, x_adv, y)
        reference[fooled] = x_adv[fooled]
        robust &= ~fooled
    _compare("autoattack", model, x, y, ours, reference)


def test_apgd_t_is_at_least_as_strong_as_apgd_dlr_on_real_images(tiny_ham):
    """APGD-T (no ART counterpart with the paper's targeted DLR) against our APGD-DLR, paired:
    with 6 targets it should fool at least what the untargeted DLR does, up to the same
    McNemar allowance."""
    model, x, y = tiny_ham
    targeted = make_attack("apgd_t", epsilon=EPSILON, steps=STEPS, targets=6).generate(model, x, y)
    untargeted = make_attack("apgd_dlr", epsilon=EPSILON, steps=STEPS).generate(model, x, y)
    robust_t, robust_dlr = _robust(model, targeted, y), _robust(model, untargeted, y)
    only_t, only_dlr = int(np.sum(robust_t & ~robust_dlr)), int(np.sum(~robust_t & robust_dlr))
    print(f"apgd_t robust {robust_t.mean():.3f}, apgd_dlr {robust_dlr.mean():.3f}")
    assert only_t <= only_dlr or mcnemar_exact_p(only_t, only_dlr) >= ALPHA
