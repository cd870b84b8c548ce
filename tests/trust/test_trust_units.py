"""Data-free checks of training.trust on a tiny synthetic model: exact ball membership, spec
limits, call accounting against the calls really made, budgets, determinism, summaries."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydantic import ValidationError

from tests.support.tiny_models import small_cnn, synthetic
from training import gradients
from training.store import ModelManifest
from training.trust import (
    Certification,
    Deadline,
    FlipSpec,
    SmoothingSpec,
    TrustDeadlineExceeded,
    certified_accuracy_curve,
    certify,
    flip_distribution,
    noise_sigma_of,
    predict,
    smallest_flip,
)
from training.trust.ball import distance, into_ball
from training.trust.flip import MAX_MODEL_CALLS, MAX_RESTARTS
from training.trust.render import certified_accuracy_png, flipped_fraction_png
from training.trust.smoothing import MAX_SAMPLES, lower_confidence_bound

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_into_ball_holds_exactly_where_float32_rounding_overshoots(norm):
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 200, (8, 8, 3)).astype(np.float32)  # non-integer: x + ε rounds
    epsilon = 0.1 if norm == "inf" else 3.0
    direction = rng.choice([-1.0, 1.0], x.shape) if norm == "inf" else rng.normal(size=x.shape)
    if norm == "2":
        direction /= np.linalg.norm(direction)
    naive = (x + np.float32(epsilon) * direction.astype(np.float32)).astype(np.float32)
    assert distance(x, naive, norm) > epsilon  # float32 rounding: the case the helper is for
    inside = into_ball(x, naive, epsilon, norm)
    assert distance(x, inside, norm) <= epsilon
    assert inside.dtype == np.float32 and distance(x, inside, norm) > 0.99 * epsilon


@pytest.mark.parametrize(
    "bad",
    [
        {"norm": "2", "attack": "apgd_ce"},
        {"max_epsilon": 300.0},
        {"start_epsilon": 8.0, "max_epsilon": 4.0},
        {"steps": 0},
        {"restarts": 1000},
        {"max_model_calls": 0},
        {"precision": 1.5},
        {"unknown": 1},
    ],
)
def test_flip_spec_refuses_out_of_bounds_requests(bad):
    with pytest.raises(ValidationError):
        FlipSpec(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"sigma": 0.0},
        {"sigma": 8.0, "n": 0},
        {"sigma": 8.0, "n": 10**7},
        {"sigma": 8.0, "alpha": 0.7},
    ],
)
def test_smoothing_spec_refuses_out_of_bounds_requests(bad):
    with pytest.raises(ValidationError):
        SmoothingSpec(**bad)


class _Spy:
    """Counts the images the real gradient/forward functions see (wraps, does not replace).

    ``started`` holds each call's ``time.monotonic()`` at its start and its image count, to tell
    the work begun after a deadline from the work before it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gradient_images = self.forward_images = 0
        self.started: list[tuple[float, int]] = []
        real_step, real_grad, real_logits = (
            gradients.loss_step,
            gradients.loss_input_gradient,
            gradients.logits,
        )

        def loss_step(*args, **kwargs):
            step = real_step(*args, **kwargs)

            def counted(state, constants):
                self.gradient_images += len(state[0])
                self.started.append((time.monotonic(), len(state[0])))
                return step(state, constants)

            return counted

        def loss_input_gradient(model, pixels, *args, **kwargs):
            self.gradient_images += len(pixels)
            self.started.append((time.monotonic(), len(pixels)))
            return real_grad(model, pixels, *args, **kwargs)

        def logits(model, pixels, *args, **kwargs):
            self.forward_images += len(pixels)
            self.started.append((time.monotonic(), len(pixels)))
            return real_logits(model, pixels, *args, **kwargs)

        monkeypatch.setattr(gradients, "loss_step", loss_step)
        monkeypatch.setattr(gradients, "loss_input_gradient", loss_input_gradient)
        monkeypatch.setattr(gradients, "logits", logits)


@pytest.mark.parametrize(
    ("norm", "attack", "restarts"), [("inf", "apgd_ce", 1), ("inf", "pgd", 2), ("2", "pgd_l2", 1)]
)
def test_reported_model_calls_are_the_calls_made(monkeypatch, norm, attack, restarts):
    model = small_cnn()
    x, _ = synthetic(2, seed=5)
    spy = _Spy(monkeypatch)
    spec = FlipSpec(norm=norm, attack=attack, steps=5, restarts=restarts)
    report = smallest_flip(model, x[0], spec).report
    assert report.gradient_calls == spy.gradient_images > 0
    assert report.forward_calls == spy.forward_images
    assert report.model_calls == spy.gradient_images + spy.forward_images


def test_flip_search_is_deterministic_and_verified():
    model = small_cnn()
    x, _ = synthetic(2, seed=5)
    first, again = smallest_flip(model, x[1]), smallest_flip(model, x[1])
    assert first.report == again.report
    assert np.array_equal(first.adversarial, again.adversarial)
    assert first.report.upper is not None and first.report.lower < first.report.upper
    flipped = int(np.argmax(gradients.logits(model, first.adversarial[None])[0]))
    assert flipped == first.report.adversarial_label != first.report.clean_label
    assert distance(x[1], first.adversarial, "inf") <= first.report.upper


def test_model_call_budget_ends_the_search_with_a_valid_bracket():
    model = small_cnn()
    x, _ = synthetic(1, seed=5)
    spec = FlipSpec(steps=10, max_model_calls=40)  # room for the clean pass and 3 runs of 12
    report = smallest_flip(model, x[0], spec).report
    assert report.stopped == "model_calls"
    assert report.model_calls <= 40
    assert report.upper is None or report.lower < report.upper


def test_a_spent_deadline_raises_a_timeout_for_both_computations():
    model = small_cnn()
    x, _ = synthetic(1, seed=5)
    with pytest.raises(TrustDeadlineExceeded) as raised:
        smallest_flip(model, x[0], FlipSpec(deadline_s=1e-9))
    assert isinstance(raised.value, TimeoutError) and "deadline" in str(raised.value)
    with pytest.raises(TrustDeadlineExceeded):
        certify(model, x[0], SmoothingSpec(sigma=8.0, deadline_s=1e-9))


LONG_RUN_DEADLINE_S = 0.5
# A flip search that finds nothing and would run for hours: ε from 0.01 to 0.25 pixels (far
# inside this model's margin) in steps of 0.1 %, 20 restarts each; a certification of 10⁶ samples.
LONG_FLIP = FlipSpec(
    steps=10, restarts=MAX_RESTARTS, start_epsilon=0.01, max_epsilon=0.25, growth=1.001,
    max_model_calls=MAX_MODEL_CALLS,
)  # fmt: skip
LONG_CERTIFY = SmoothingSpec(sigma=16.0, n0=1, n=MAX_SAMPLES, batch_size=64)


@pytest.mark.parametrize("what", ["flip", "certify"])
def test_a_deadline_stops_a_long_computation_within_one_unit_of_work(monkeypatch, what):
    """The deadline is checked before each attack run (flip) and each noise batch (certify),
    never inside one, so the model calls *started* after it passes are at most one run's
    (``run_cost``: the steps' gradient calls, the last iterate's and the verifying forward
    pass) or one batch's images. That holds exactly whatever the load, so no time tolerance is
    needed. Checked only at the start, neither would stop for hours."""
    model = small_cnn()
    x, _ = synthetic(1, seed=5)
    spy = _Spy(monkeypatch)
    allowed = LONG_FLIP.run_cost().total if what == "flip" else LONG_CERTIFY.batch_size
    deadline = Deadline(LONG_RUN_DEADLINE_S)
    start = time.monotonic()  # ≥ the deadline's own start: "after" below is never too wide
    with pytest.raises(TrustDeadlineExceeded, match="stopped after"):
        if what == "flip":
            smallest_flip(model, x[0], LONG_FLIP, deadline)
        else:
            certify(model, x[0], LONG_CERTIFY, deadline)
    passed = start + LONG_RUN_DEADLINE_S
    assert sum(images for at, images in spy.started if at <= passed) > 0
    assert sum(images for at, images in spy.started if at > passed) <= allowed


def test_clopper_pearson_bound_matches_statsmodels():
    statsmodels = pytest.importorskip("statsmodels.stats.proportion")
    for successes, trials, alpha in [(0, 10, 0.001), (7, 10, 0.05), (990, 1000, 0.001)]:
        ours = lower_confidence_bound(successes, trials, alpha)
        reference = statsmodels.proportion_confint(successes, trials, 2 * alpha, "beta")[0]
        assert ours == pytest.approx(reference, abs=1e-12)


def test_certify_and_predict_are_seeded_and_consistent():
    model = small_cnn()
    x, _ = synthetic(1, seed=5)
    spec = SmoothingSpec(sigma=16.0, n0=20, n=200, batch_size=64)
    first, again = certify(model, x[0], spec), certify(model, x[0], spec)
    assert first == again
    assert sum(first.counts) == spec.n and sum(first.selection_counts) == spec.n0
    assert first.model_calls == spec.n0 + spec.n
    # this model's counts barely move with the noise, so compare the noisy images themselves
    seed_0, seed_0_again = _noisy_inputs(model, x[0], spec), _noisy_inputs(model, x[0], spec)
    seed_1 = _noisy_inputs(model, x[0], spec.model_copy(update={"seed": 1}))
    assert np.array_equal(seed_0, seed_0_again) and not np.array_equal(seed_0, seed_1)
    assert len(seed_0) == spec.n0 + spec.n
    smoothed = predict(model, x[0], spec)
    assert sum(smoothed.counts) == spec.n
    assert smoothed.label in (None, int(np.argmax(smoothed.counts)))


def _noisy_inputs(model, x: np.ndarray, spec: SmoothingSpec) -> np.ndarray:
    """The noisy images :func:`certify` runs through the (real) model, recorded on the way."""
    seen: list[np.ndarray] = []
    real = gradients.logits

    def recording(m, pixels):
        seen.append(np.array(pixels))
        return real(m, pixels)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gradients, "logits", recording)
        certify(model, x, spec)
    return np.concatenate(seen)


def test_noise_is_gaussian_and_not_clipped_to_the_pixel_range():
    """A white image: clipped noise could only darken it; unclipped, half the values exceed 255
    and the noise has mean 0 and standard deviation σ (within 6 standard errors)."""
    white = np.full((32, 32, 3), 255.0, np.float32)
    noise = _noisy_inputs(small_cnn(), white, SmoothingSpec(sigma=8.0, n0=4, n=4)) - 255.0
    assert noise.max() > 0
    assert abs(noise.mean()) < 6 * 8.0 / np.sqrt(noise.size)
    assert abs(noise.std() / 8.0 - 1) < 6 / np.sqrt(2 * noise.size)


def test_noise_sigma_is_read_from_the_training_spec():
    def manifest(spec):
        return ModelManifest.model_construct(training_spec=spec)

    assert noise_sigma_of(manifest({"train": {"noise_sigma": 32.0}})) == 32.0
    assert noise_sigma_of(manifest({"train": {"noise_sigma": 0.0}})) is None
    assert noise_sigma_of(manifest({"train": {}})) is None
    assert noise_sigma_of(manifest(None)) is None


def _certification(label, radius, sigma=8.0):
    return Certification(
        label=label, radius=radius, p_lower=0.9, selected_label=label or 0, selection_counts=[1],
        counts=[1], n0=1, n=1, alpha=0.001, sigma=sigma, seed=0, model_calls=2,
    )  # fmt: skip


def test_certified_accuracy_counts_correct_and_certified_at_each_radius():
    certifications = [
        _certification(0, 5.0),  # right, radius 5
        _certification(1, 20.0),  # wrong class: never counts
        _certification(None, 0.0),  # abstains: never counts
        _certification(2, 10.0),  # right, radius 10
    ]
    curve = certified_accuracy_curve(
        certifications, [0, 0, 1, 2], radii=[0.0, 5.0, 7.5, 10.0, 11.0]
    )
    assert curve.certified_accuracy == [0.5, 0.5, 0.25, 0.25, 0.0]
    assert curve.abstain_fraction == 0.25
    # per class (labels 0, 0, 1, 2): class 0 has 1 of 2 certified up to r=5, class 1 none,
    # class 2 its one up to r=10; the mean of the three
    assert curve.balanced_certified_accuracy == pytest.approx(
        [(0.5 + 0 + 1) / 3, (0.5 + 0 + 1) / 3, 1 / 3, 1 / 3, 0.0]
    )
    with pytest.raises(ValueError, match="σ"):
        certified_accuracy_curve([_certification(0, 1.0), _certification(0, 1.0, 4.0)], [0, 0], [0])
    assert certified_accuracy_png({"noise": curve}).startswith(PNG_MAGIC)


def test_a_majority_voter_certifies_one_class_in_balanced_terms():
    """9 of 10 images of class 0, all certified as 0: plain 0.9, balanced 1/2."""
    certifications = [_certification(0, 30.0) for _ in range(10)]
    curve = certified_accuracy_curve(certifications, [0] * 9 + [1], radii=[0.0, 16.0])
    assert curve.certified_accuracy == [0.9, 0.9]
    assert curve.balanced_certified_accuracy == [0.5, 0.5]


def test_flip_distribution_over_correct_images_with_unflipped_as_beyond():
    model = small_cnn()
    x, y = synthetic(6, seed=7)
    reports = [smallest_flip(model, image, FlipSpec(steps=5, precision=0.3)).report for image in x]
    grid = [0.5, 2.0, 8.0, 32.0, 64.0]
    dist = flip_distribution(reports, list(y), grid, class_names=["r", "g", "b"])
    correct = [r for r, label in zip(reports, y, strict=True) if r.clean_label == label]
    assert dist.n_correct == len(correct) and dist.n_images == 6
    uppers = sorted(np.inf if r.upper is None else r.upper for r in correct)
    for epsilon, fraction in zip(grid, dist.flipped_fraction, strict=True):
        assert fraction == np.mean([u <= epsilon for u in uppers])
    assert dist.flipped_fraction == sorted(dist.flipped_fraction)
    if dist.overall.median is not None:
        assert dist.overall.median in uppers
    assert sum(q.n for q in dist.per_class.values()) == dist.n_correct
    assert set(dist.per_class) <= {"r", "g", "b"}
    assert flipped_fraction_png({"cnn": dist}).startswith(PNG_MAGIC)
