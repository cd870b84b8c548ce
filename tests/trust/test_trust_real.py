"""training.trust on real HAM10000 images (32 px) with tiny CNNs (tests.support.tiny_models).

Randomized smoothing is cross-checked against ART's ``TensorFlowV2RandomizedSmoothing`` on the
same model and σ. ART adds its noise in the estimator's input units; with no ART preprocessing
and our model taking raw [0, 255] pixels, ART's ``scale`` is σ in pixel units, as ours, and
ART does not clip the noisy images either (its ``clip_values`` only bound attacks).

Tolerance of that cross-check. The two sides draw independent noise, so for one image their
estimation counts ``k`` (ours) and ``k'`` (ART's) of the same class are independent
Binomial(n, p). Their difference has standard deviation ``√(2p(1−p)/n) ≤ 1/√(2n)``; with a
Bonferroni share of 1 % over the ``m`` images, ``|k − k'| ≤ t = z·n/√(2n)``, ``z = Φ⁻¹(1 −
0.01/(2m))``, fails by chance at most 1 % of the time. ART reports a radius, not ``k'``; since
the radius ``R(k) = σ·Φ⁻¹(p̲(k))`` is increasing in ``k``, ART's radius must lie in
``[R(k − t), R(k + t)]`` (computed with our Clopper–Pearson bound, which ART's statsmodels call
matches, see test_trust_units). Decisions: where both certify they name the same class (two
classes above ½ cannot both be right, failure ≤ 2α); where exactly one abstains, the bracket
``[p̲(k − t), p̲(k + t)]`` must straddle ½.

The noise-trained model's advantage is asserted in direction only, paired on the same images:
it must certify-and-classify-correctly more images than the noise-free model at the same σ,
with McNemar's exact test p < 0.05 over the discordant images; the fractions are printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm as gaussian

from tests.support.tiny_models import HAM_CLASSES, SIZE, ham_case
from training import gradients
from training.attacks import make_attack
from training.stats import mcnemar_exact_p
from training.trust import FlipSpec, SmoothingSpec, certify, smallest_flip
from training.trust.ball import distance
from training.trust.smoothing import lower_confidence_bound, radius_of

pytestmark = [pytest.mark.data, pytest.mark.slow]

SIGMA = 64.0  # pixel units (0.25 on a [0, 1] scale, Cohen et al.'s middle σ)
FLIP_STEPS = 10
MONOTONE_EPSILON = 4.0  # on the search's schedule 0.5·2^k: the search runs this very attack


def _correct(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.argmax(gradients.logits(model, x), axis=1) == y)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_every_reported_upper_bound_is_verified_on_real_images(data_dir: Path, norm):
    case = ham_case(data_dir)
    picked = _correct(case.model, case.x_test, case.y_test)[:12]
    assert len(picked) >= 8
    found = 0
    for i in picked:
        flip = smallest_flip(case.model, case.x_test[i], FlipSpec(norm=norm, steps=FLIP_STEPS))
        report = flip.report
        if report.upper is None:
            assert flip.adversarial is None and report.stopped != "precision"
            continue
        found += 1
        rerun = int(np.argmax(gradients.logits(case.model, flip.adversarial[None])[0]))
        assert rerun == report.adversarial_label != report.clean_label == case.y_test[i]
        assert distance(case.x_test[i], flip.adversarial, norm) <= report.upper
        assert 0 <= report.lower < report.upper
        assert float(flip.adversarial.min()) >= 0 and float(flip.adversarial.max()) <= 255
        print(f"L{norm} image {i}: [{report.lower:.3g}, {report.upper:.3g}], "
              f"{report.model_calls} calls")  # fmt: skip
    assert found >= len(picked) // 2  # a tiny model on real images flips easily


def test_an_image_flipped_at_epsilon_is_reported_with_upper_at_most_epsilon(data_dir: Path):
    case = ham_case(data_dir)
    picked = _correct(case.model, case.x_test, case.y_test)[:16]
    attack = make_attack("apgd_ce", epsilon=MONOTONE_EPSILON, steps=FLIP_STEPS, seed=0)
    spec = FlipSpec(steps=FLIP_STEPS)
    flipped = 0
    for i in picked:
        x = case.x_test[i]
        x_adv = attack.generate(case.model, x[None], case.y_test[i : i + 1], np.array([0]))
        if np.argmax(gradients.logits(case.model, x_adv)[0]) == case.y_test[i]:
            continue
        flipped += 1
        report = smallest_flip(case.model, x, spec).report
        assert report.upper is not None and report.upper <= MONOTONE_EPSILON
    assert flipped > 0


def _tolerance_counts(n: int, images: int) -> float:
    z = gaussian.ppf(1 - 0.01 / (2 * images))
    return z * n / np.sqrt(2 * n)


def test_randomized_smoothing_agrees_with_art(data_dir: Path):
    pytest.importorskip("statsmodels", reason="ART's certify computes its bound with statsmodels")
    import tensorflow as tf
    from art.estimators.certification.randomized_smoothing import (
        TensorFlowV2RandomizedSmoothing,
    )

    case = ham_case(data_dir, SIGMA)
    x = case.x_test[::5]  # 28 class-balanced images
    spec = SmoothingSpec(sigma=SIGMA, n0=100, n=1000, alpha=0.001, batch_size=250)
    art = TensorFlowV2RandomizedSmoothing(
        case.model,
        nb_classes=HAM_CLASSES,
        input_shape=(SIZE, SIZE, 3),
        loss_object=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        clip_values=(0, 255),
        sample_size=spec.n0,
        scale=SIGMA,
        alpha=spec.alpha,
    )
    np.random.seed(0)  # ART draws its noise from numpy's global generator
    art_labels, art_radii = art.certify(x, n=spec.n, batch_size=spec.batch_size)
    t = _tolerance_counts(spec.n, len(x))

    def bound(count: float) -> float:
        return lower_confidence_bound(int(np.clip(np.round(count), 0, spec.n)), spec.n, spec.alpha)

    both = agreed = 0
    for image, art_label, art_radius in zip(x, art_labels, art_radii, strict=True):
        ours = certify(case.model, image, spec)
        art_label = None if art_label < 0 else int(art_label)
        agreed += (ours.label is None) == (art_label is None)
        if ours.label is not None and art_label is not None:
            both += 1
            assert art_label == ours.label
            k = ours.counts[ours.label]
            low, high = radius_of(bound(k - t), SIGMA), radius_of(bound(k + t), SIGMA)
            print(f"radius ours {ours.radius:.1f}, ART {art_radius:.1f}, [{low:.1f}, {high:.1f}]")
            assert low <= art_radius <= high
        elif ours.label is not None:  # ART abstained
            assert bound(ours.counts[ours.label] - t) < 0.5
        elif art_label is not None:  # we abstained
            assert bound(ours.counts[art_label] + t) >= 0.5
    print(f"ART cross-check on {len(x)} images: both certify {both}, same decision {agreed}, "
          f"count tolerance ±{t:.0f} of n={spec.n}")  # fmt: skip
    assert both >= len(x) // 4  # a comparison of radii, not only of abstentions


def test_noise_training_certifies_more_images_correctly_than_clean_training(data_dir: Path):
    spec = SmoothingSpec(sigma=SIGMA, n0=50, n=500, alpha=0.001, batch_size=250)
    outcome = {}
    for sigma_train in (0.0, SIGMA):
        case = ham_case(data_dir, sigma_train)
        results = [certify(case.model, image, spec) for image in case.x_test]
        labels = np.array([-1 if r.label is None else r.label for r in results])
        radii = np.array([r.radius for r in results])
        outcome[sigma_train] = (labels == case.y_test) & (radii > 0)
        print(
            f"trained with σ={sigma_train:g}, certified at σ={SIGMA:g} on {len(labels)} images: "
            f"abstain {np.mean(labels < 0):.3f}, certified {np.mean(labels >= 0):.3f}, "
            f"certified and correct {outcome[sigma_train].mean():.3f}, "
            f"median radius (certified) {np.median(radii[labels >= 0]):.1f}"
        )
    noisy, clean = outcome[SIGMA], outcome[0.0]
    only_noisy, only_clean = int(np.sum(noisy & ~clean)), int(np.sum(clean & ~noisy))
    p = mcnemar_exact_p(only_noisy, only_clean)
    print(f"only noise-trained {only_noisy}, only clean-trained {only_clean}, McNemar p={p:.3g}")
    assert only_noisy > only_clean and p < 0.05
