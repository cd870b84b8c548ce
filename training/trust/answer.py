"""One prediction's robustness block: what ``/predict``, ``/explain`` and ``medrobust predict``
print next to the probabilities.

It wraps :func:`~training.trust.flip.smallest_flip` (one search per norm) and
:func:`~training.trust.smoothing.certify` for one prepared image and names classes by the
manifest's class names, so a caller never sees a bare index. The service decides the limits and
the deadline; the CLI uses the same defaults without a server. Both share one σ policy
(:func:`smoothing_sigma`): certifying a model that was not trained with Gaussian noise is refused
unless the caller names σ, and then the answer carries a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import keras
import numpy as np
from pydantic import BaseModel, Field

from training import gradients
from training.store import ModelManifest
from training.trust.ball import Norm, distance
from training.trust.budget import Deadline
from training.trust.flip import FlipReport, FlipSpec, smallest_flip
from training.trust.smoothing import SmoothingSpec, certify, noise_sigma_of

Robustness = Literal["none", "flip", "certify", "all"]
PIXEL_UNITS = "pixel intensity on the [0, 255] input scale (ε = 2 means 2/255)"
ABSTAIN = "abstain"
NORM_KEYS: dict[Norm, str] = {"inf": "linf", "2": "l2"}


class NoiseSigmaMissing(ValueError):
    """Certification was asked of a model trained without Gaussian noise, and no σ was given."""


class FlipBound(BaseModel):
    """The smallest-flip bracket for one norm, classes named."""

    norm: Norm
    units: str = PIXEL_UNITS
    lower: float = Field(description="largest ε tried with no flip found: empirical, no guarantee")
    upper: float | None = Field(description="smallest ε with a verified flip; None: none found")
    clean_class: str
    found_class: str | None = Field(description="the class the adversarial image gets")
    adversarial_distance: float | None = Field(description="its distance from the image (≤ upper)")
    verified: bool = Field(
        description="the adversarial image was re-run: its class differs and its distance ≤ upper"
    )
    attack: str
    steps: int
    restarts: int
    stopped: str
    model_calls: int = Field(description="forward + gradient evaluations, the re-run included")
    gradient_calls: int


class CertifiedBound(BaseModel):
    """Randomized smoothing's CERTIFY (Cohen et al., 2019) for this image."""

    smoothed_class: str = Field(description=f"the smoothed classifier's class, or {ABSTAIN!r}")
    radius: float = Field(description="certified L2 radius of the smoothed classifier")
    norm: Literal["2"] = "2"
    units: str = PIXEL_UNITS
    p_lower: float
    n0: int
    n: int
    alpha: float
    sigma: float = Field(description="noise σ used, pixel units")
    trained_sigma: float | None = Field(description="σ the model was trained with, if any")
    model_calls: int
    warning: str | None = None


class RobustnessBlock(BaseModel):
    """``flip`` (keys ``linf``, ``l2``) and/or ``certified``, as asked."""

    flip: dict[str, FlipBound] | None = None
    certified: CertifiedBound | None = None


@dataclass(frozen=True)
class TrustPlan:
    """What to compute for one model: flip specs (one per norm) and/or a smoothing spec."""

    flips: tuple[FlipSpec, ...] = ()
    smoothing: SmoothingSpec | None = None
    trained_sigma: float | None = None
    warning: str | None = None


@dataclass(frozen=True)
class TrustAnswer:
    """The block and the L∞ flipping image (prepared pixels; None if none found or not asked)."""

    block: RobustnessBlock
    adversarial: np.ndarray | None = field(default=None, repr=False)


def wants(robustness: Robustness) -> tuple[bool, bool]:
    """(flip, certify) for a ``robustness`` value."""
    return robustness in ("flip", "all"), robustness in ("certify", "all")


def smoothing_sigma(manifest: ModelManifest, requested: float | None) -> tuple[float, str | None]:
    """σ to certify with, and a warning when it is not the σ the model was trained with.

    Smoothing certifies the *smoothed* classifier; built on a model never trained under that
    noise it mostly abstains or certifies a classifier unlike the model, so it needs consent.
    """
    trained = noise_sigma_of(manifest)
    if requested is None:
        if trained is None:
            raise NoiseSigmaMissing(
                f"{manifest.ref} was trained without Gaussian noise (no train.noise_sigma), so "
                "its smoothed classifier says little about it: retrain with train.noise_sigma, "
                "or give noise_sigma explicitly to certify anyway"
            )
        return trained, None
    if trained is None:
        return requested, (
            f"{manifest.ref} was trained without Gaussian noise: the certificate holds for the "
            f"smoothed classifier at σ={requested:g}, which may abstain often and differ from "
            "the model"
        )
    if not np.isclose(requested, trained):
        return requested, (
            f"σ={requested:g} differs from the σ={trained:g} {manifest.ref} was trained with"
        )
    return requested, None


def _flip_bound(
    model: keras.Model, x: np.ndarray, spec: FlipSpec, names: Sequence[str], deadline: Deadline
) -> tuple[FlipBound, np.ndarray | None]:
    flip = smallest_flip(model, x, spec, deadline)
    report: FlipReport = flip.report
    verified = False
    calls = report.model_calls
    if flip.adversarial is not None and report.upper is not None:
        label = int(np.argmax(gradients.logits(model, flip.adversarial[None])[0]))
        calls += 1
        verified = (
            label != report.clean_label and distance(x, flip.adversarial, spec.norm) <= report.upper
        )
    found = report.adversarial_label
    bound = FlipBound(
        norm=spec.norm,
        lower=report.lower,
        upper=report.upper,
        clean_class=names[report.clean_label],
        found_class=None if found is None else names[found],
        adversarial_distance=report.adversarial_distance,
        verified=verified,
        attack=report.attack,
        steps=report.steps,
        restarts=report.restarts,
        stopped=report.stopped,
        model_calls=calls,
        gradient_calls=report.gradient_calls,
    )
    return bound, flip.adversarial


def robustness_answer(
    model: keras.Model,
    manifest: ModelManifest,
    pixels: np.ndarray,
    plan: TrustPlan,
    deadline: Deadline | None = None,
) -> TrustAnswer:
    """The block for one prepared image ``(S, S, 3)`` of raw pixels in [0, 255].

    ``deadline`` (shared by every search and the certification) raises
    :class:`~training.trust.budget.TrustDeadlineExceeded` once spent; it is checked first, so
    work that waited in a queue past it never starts.
    """
    deadline = deadline or Deadline(None)
    deadline.check()
    x = np.asarray(pixels, np.float32)
    names = manifest.class_names
    flips: dict[str, FlipBound] = {}
    adversarial = None
    for spec in plan.flips:
        bound, image = _flip_bound(model, x, spec, names, deadline)
        flips[NORM_KEYS[spec.norm]] = bound
        if spec.norm == "inf":
            adversarial = image
    certified = None
    if plan.smoothing is not None:
        result = certify(model, x, plan.smoothing, deadline)
        certified = CertifiedBound(
            smoothed_class=ABSTAIN if result.label is None else names[result.label],
            radius=result.radius,
            p_lower=result.p_lower,
            n0=result.n0,
            n=result.n,
            alpha=result.alpha,
            sigma=result.sigma,
            trained_sigma=plan.trained_sigma,
            model_calls=result.model_calls,
            warning=plan.warning,
        )
    block = RobustnessBlock(flip=flips or None, certified=certified)
    return TrustAnswer(block=block, adversarial=adversarial)


def default_plan(
    manifest: ModelManifest,
    robustness: Robustness,
    noise_sigma: float | None = None,
    flip: dict | None = None,
    smoothing: dict | None = None,
) -> TrustPlan:
    """A plan from the specs' defaults (``flip`` / ``smoothing``: overrides of their fields),
    with the σ policy of :func:`smoothing_sigma`; raises :class:`NoiseSigmaMissing`."""
    do_flip, do_certify = wants(robustness)
    flips = tuple(FlipSpec(norm=norm, **(flip or {})) for norm in ("inf", "2")) if do_flip else ()
    if not do_certify:
        return TrustPlan(flips=flips)
    sigma, warning = smoothing_sigma(manifest, noise_sigma)
    return TrustPlan(
        flips=flips,
        smoothing=SmoothingSpec(sigma=sigma, **(smoothing or {})),
        trained_sigma=noise_sigma_of(manifest),
        warning=warning,
    )
