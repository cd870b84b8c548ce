"""Randomized smoothing: a certified L2 radius for one prediction.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
ICML 2019. The smoothed classifier ``g(x) = argmax_c P(f(x + δ) = c)``, ``δ ~ N(0, σ²I)``, is
constant within L2 radius ``σ·Φ⁻¹(p̲_A)`` of ``x`` whenever the top class has probability at
least ``p̲_A > ½`` (their Theorem 1 with ``p̄_B = 1 − p̲_A``).

* :func:`certify` is their CERTIFY: ``n0`` noisy samples pick the class ``ĉ_A``; ``n`` fresh
  samples give ``p̲_A``, the one-sided ``(1 − α)`` Clopper–Pearson lower bound of its
  frequency; below ½ it abstains. With probability ≥ 1 − α over the noise, a returned class and
  radius are correct for ``g``.
* :func:`predict` is their PREDICT: ``g(x)`` or abstain, wrong with probability ≤ α.

Units and choices. σ and the radius are in pixels of the raw ``[0, 255]`` input (the model's
input), the L2 norm over all ``H·W·3`` values. The noisy images are **not clipped** to [0, 255]:
clipping would make the noise non-Gaussian and void the theorem (Cohen et al. do not clip
either). The guarantee is for the *smoothed* classifier, not the base model ``f``; it is
meaningful only for a model trained with Gaussian noise of the same σ (``train.noise_sigma``,
read back with :func:`noise_sigma_of`). Noise is drawn from ``numpy.random.default_rng(seed)``
in batches of ``batch_size`` images, so an answer is a pure function of (model, image, spec).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import beta, binomtest, norm

from training import gradients
from training.store import ModelManifest
from training.trust.budget import Deadline

# Hard ceilings whatever the caller asks; a server narrows them further.
MAX_SAMPLES = 1_000_000
MAX_BATCH = 4096


class SmoothingSpec(BaseModel):
    """CERTIFY's parameters; the defaults are Cohen et al.'s (n0 = 100, n = 100 000, α = 0.001)
    except ``n``, which a server answering one request at a time cannot afford."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma: float = Field(gt=0, le=1000, description="noise σ in pixel units ([0, 255] scale)")
    n0: int = Field(100, ge=1, le=MAX_SAMPLES, description="samples that select the class")
    n: int = Field(1000, ge=1, le=MAX_SAMPLES, description="samples that estimate p̲_A")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability")
    batch_size: int = Field(256, ge=1, le=MAX_BATCH, description="noisy images per model call")
    deadline_s: float | None = Field(None, gt=0, description="wall-clock budget per answer")
    seed: int = 0


class Certification(BaseModel):
    """CERTIFY's answer. ``label`` None means abstain (then ``radius`` is 0)."""

    label: int | None
    radius: float = Field(description="certified L2 radius σ·Φ⁻¹(p̲_A), pixel units")
    p_lower: float = Field(description="(1 − α) lower confidence bound of P(f(x + δ) = label)")
    selected_label: int = Field(description="ĉ_A: the class the n0 samples picked")
    selection_counts: list[int]
    counts: list[int] = Field(description="class counts of the n estimation samples")
    n0: int
    n: int
    alpha: float
    sigma: float
    seed: int
    model_calls: int = Field(description="noisy images run through the model (n0 + n)")


class SmoothedPrediction(BaseModel):
    """PREDICT's answer: ``label`` None means abstain."""

    label: int | None
    counts: list[int]
    p_value: float = Field(description="two-sided binomial test of the top two counts")
    n: int
    alpha: float
    sigma: float
    seed: int


def noise_sigma_of(manifest: ModelManifest) -> float | None:
    """The Gaussian-noise σ (pixel units) a stored model was trained with; None if none.

    Read from the recorded training spec (``train.noise_sigma``); manifests of models trained
    without noise, or before the setting existed, give None.
    """
    spec: dict[str, Any] = manifest.training_spec or {}
    sigma = (spec.get("train") or {}).get("noise_sigma")
    return float(sigma) if sigma else None


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``(1 − α)`` Clopper–Pearson lower bound of a binomial proportion (0 if none)."""
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def radius_of(p_lower: float, sigma: float) -> float:
    """``σ·Φ⁻¹(p̲)`` for ``p̲ ≥ ½``, else 0 (abstain)."""
    return float(sigma * norm.ppf(p_lower)) if p_lower >= 0.5 else 0.0


def noisy_counts(
    model: keras.Model,
    x: np.ndarray,
    num: int,
    sigma: float,
    batch_size: int,
    rng: np.random.Generator,
    deadline: Deadline,
) -> np.ndarray:
    """Class counts of ``f(x + δ)`` over ``num`` draws ``δ ~ N(0, σ²I)`` (unclipped), in batches.

    The deadline is checked before each batch; the noise is drawn in float32 straight into the
    batch buffer, so the loop adds little to the model's own time (``bench/robustness_latency``).
    """
    x = np.asarray(x, np.float32)
    counts = np.zeros(int(model.output.shape[-1]), np.int64)
    buffer = np.empty((min(batch_size, num), *x.shape), np.float32)
    remaining = num
    while remaining > 0:
        deadline.check()
        size = min(batch_size, remaining)
        batch = buffer[:size]
        rng.standard_normal(out=batch, dtype=np.float32)
        batch *= np.float32(sigma)
        batch += x
        predicted = np.argmax(gradients.logits(model, batch), axis=1)
        counts += np.bincount(predicted, minlength=len(counts))
        remaining -= size
    return counts


def certify(
    model: keras.Model, x: np.ndarray, spec: SmoothingSpec, deadline: Deadline | None = None
) -> Certification:
    """Cohen et al.'s CERTIFY for one image ``x`` ``(H, W, 3)`` of raw pixels in [0, 255].

    Raises :class:`~training.trust.budget.TrustDeadlineExceeded` past the deadline.
    """
    deadline = deadline or Deadline(spec.deadline_s, "certification")
    rng = np.random.default_rng(spec.seed)
    selection = noisy_counts(model, x, spec.n0, spec.sigma, spec.batch_size, rng, deadline)
    selected = int(np.argmax(selection))
    counts = noisy_counts(model, x, spec.n, spec.sigma, spec.batch_size, rng, deadline)
    p_lower = lower_confidence_bound(int(counts[selected]), spec.n, spec.alpha)
    certified = p_lower >= 0.5
    return Certification(
        label=selected if certified else None,
        radius=radius_of(p_lower, spec.sigma),
        p_lower=p_lower,
        selected_label=selected,
        selection_counts=selection.tolist(),
        counts=counts.tolist(),
        n0=spec.n0,
        n=spec.n,
        alpha=spec.alpha,
        sigma=spec.sigma,
        seed=spec.seed,
        model_calls=spec.n0 + spec.n,
    )


def predict(
    model: keras.Model, x: np.ndarray, spec: SmoothingSpec, deadline: Deadline | None = None
) -> SmoothedPrediction:
    """Cohen et al.'s PREDICT: the smoothed class from ``spec.n`` samples, or abstain when a
    two-sided binomial test cannot tell the top two counts apart at level α."""
    deadline = deadline or Deadline(spec.deadline_s, "smoothed prediction")
    rng = np.random.default_rng(spec.seed)
    counts = noisy_counts(model, x, spec.n, spec.sigma, spec.batch_size, rng, deadline)
    first, second = np.argsort(-counts, kind="stable")[:2]  # ties: the lower index, as argmax
    top, runner_up = int(counts[first]), int(counts[second])
    p_value = float(binomtest(top, top + runner_up, 0.5).pvalue)
    return SmoothedPrediction(
        label=int(first) if p_value <= spec.alpha else None,
        counts=counts.tolist(),
        p_value=p_value,
        n=spec.n,
        alpha=spec.alpha,
        sigma=spec.sigma,
        seed=spec.seed,
    )
