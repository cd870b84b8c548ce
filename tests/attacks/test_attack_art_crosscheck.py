"""The built-in attacks against ART's reference implementations on the same model and inputs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("art")

from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent  # noqa: E402

from tests.support.art_reference import art_classifier, onehot  # noqa: E402
from tests.support.tiny_models import (  # noqa: E402
    NUM_CLASSES,
    correct,
    resnet,
    resnet_batch,
    small_cnn,
    synthetic,
)
from training.attacks import BIM, FGSM, PGDL2, PGDLinf  # noqa: E402


def art_pgd(
    model, x: np.ndarray, y: np.ndarray, norm: float, epsilon: float, step_size: float, steps: int
) -> np.ndarray:
    """ART's PGD (``norm`` ∞ or 2) without random start: its adversarial images of ``(x, y)``."""
    return ProjectedGradientDescent(
        art_classifier(model, NUM_CLASSES),
        norm=norm,
        eps=epsilon,
        eps_step=step_size,
        max_iter=steps,
        num_random_init=0,
        verbose=False,
    ).generate(x, onehot(y, NUM_CLASSES))


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_art_fast_gradient_method(targeted):
    model = resnet()
    x, y = resnet_batch()
    labels = (y + 1) % NUM_CLASSES if targeted else y
    ours = FGSM(8, targeted=targeted).generate(model, x, labels)
    reference = FastGradientMethod(
        art_classifier(model, NUM_CLASSES), norm=np.inf, eps=8, targeted=targeted, minimal=False
    ).generate(x, onehot(labels, NUM_CLASSES))
    difference = float(np.max(np.abs(ours - reference)))
    print(f"FGSM (targeted={targeted}) max |ours - ART| = {difference:.3g} pixel units")
    assert difference <= 1e-4


def test_pgd_without_random_start_matches_art_pgd():
    model = resnet()
    x, y = resnet_batch()
    epsilon, step_size, steps = 0.5, 0.125, 5
    reference = art_pgd(model, x, y, np.inf, epsilon, step_size, steps)
    art_correct = correct(model, reference, y)
    clean = correct(model, x, y).mean()
    assert 0 < art_correct.mean() < clean  # a meaningful comparison
    for ours in (
        BIM(epsilon, step_size=step_size, steps=steps),
        PGDLinf(epsilon, step_size=step_size, steps=steps, random_start=False),
    ):
        x_adv = ours.generate(model, x, y)
        ours_correct = correct(model, x_adv, y)
        difference = float(np.max(np.abs(x_adv - reference)))
        print(
            f"{type(ours).__name__} robust accuracy ours {ours_correct.mean():.3f} ART "
            f"{art_correct.mean():.3f} (clean {clean:.3f}); max |ours - ART| = {difference:.3g}"
        )
        np.testing.assert_array_equal(ours_correct, art_correct)
        assert difference <= 1e-3


def test_pgd_l2_without_random_start_matches_art_pgd_l2():
    model = small_cnn()
    x, y = synthetic(16, seed=5)
    epsilon, step_size, steps = 1000.0, 250.0, 5
    ours = PGDL2(epsilon, step_size=step_size, steps=steps, random_start=False).generate(
        model, x, y
    )
    reference = art_pgd(model, x, y, 2, epsilon, step_size, steps)
    ours_correct, art_correct = correct(model, ours, y), correct(model, reference, y)
    difference = float(np.max(np.abs(ours - reference)))
    print(
        f"PGD-L2 robust accuracy ours {ours_correct.mean():.3f} ART {art_correct.mean():.3f} "
        f"(clean {correct(model, x, y).mean():.3f}); max |ours - ART| = {difference:.3g}"
    )
    np.testing.assert_array_equal(ours_correct, art_correct)
    assert difference <= 1e-3
