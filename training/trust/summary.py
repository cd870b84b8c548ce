"""Evaluation-report pieces: per-image certifications and flip searches → distributions.

* :func:`certified_accuracy_curve` — Cohen et al.'s (ICML 2019) certified accuracy at radius r:
  the fraction of *all* images that the smoothed classifier labels correctly **and** certifies
  at radius ≥ r (an abstention counts as wrong).
* :func:`flip_distribution` — the smallest flipping ε over the images the model gets right: its
  median and quartiles (overall and per class), and the fraction flipped at or below each ε.
  An image never flipped up to the search's ``max_epsilon`` counts as flipped at +∞, so the
  quantiles are ``None`` ("beyond the search") when more than that share resisted.

Everything is plain, JSON-safe pydantic (``schema_version`` bumps when a field changes meaning).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from training.trust.flip import FlipReport
from training.trust.smoothing import Certification

SCHEMA_VERSION = 1


class CertifiedAccuracyCurve(BaseModel):
    """Certified accuracy at each radius of ``radii`` (pixel units, L2), for one model and σ."""

    schema_version: int = SCHEMA_VERSION
    sigma: float
    n_images: int
    radii: list[float]
    certified_accuracy: list[float]
    balanced_certified_accuracy: list[float] = Field(
        description="the mean over the classes present of each class's certified accuracy: a "
        "smoothed classifier that votes the majority class everywhere scores 1/classes here, "
        "however high its plain certified accuracy on an imbalanced sample"
    )
    abstain_fraction: float
    clean_smoothed_accuracy: float = Field(description="certified accuracy at radius 0")


class Quartiles(BaseModel):
    """Quartiles of the smallest flipping ε; None where the quantile lies beyond the search."""

    n: int
    q1: float | None
    median: float | None
    q3: float | None


class FlipDistribution(BaseModel):
    """The smallest flipping ε (``FlipReport.upper``) over correctly classified images."""

    schema_version: int = SCHEMA_VERSION
    norm: str
    n_images: int
    n_correct: int
    overall: Quartiles
    per_class: dict[str, Quartiles]
    epsilons: list[float]
    flipped_fraction: list[float] = Field(
        description="share of the correctly classified images flipped at ε ≤ each epsilon"
    )


def certified_accuracy_curve(
    certifications: Sequence[Certification], labels: Sequence[int], radii: Sequence[float]
) -> CertifiedAccuracyCurve:
    """Certified accuracy at each radius; every certification must share one σ."""
    if len(certifications) != len(labels) or not certifications:
        raise ValueError(
            f"need one label per certification, got {len(certifications)} and {len(labels)}"
        )
    sigmas = {c.sigma for c in certifications}
    if len(sigmas) != 1:
        raise ValueError(f"certifications mix noise levels {sorted(sigmas)}; curve one σ at a time")
    correct = np.array([c.label == y for c, y in zip(certifications, labels, strict=True)])
    radius = np.array([c.radius for c in certifications])
    truth = np.asarray(labels)
    classes = np.unique(truth)
    accuracy = [float(np.mean(correct & (radius >= r))) for r in radii]
    balanced = [
        float(np.mean([np.mean((correct & (radius >= r))[truth == k]) for k in classes]))
        for r in radii
    ]
    return CertifiedAccuracyCurve(
        sigma=sigmas.pop(),
        n_images=len(certifications),
        radii=[float(r) for r in radii],
        certified_accuracy=accuracy,
        balanced_certified_accuracy=balanced,
        abstain_fraction=float(np.mean([c.label is None for c in certifications])),
        clean_smoothed_accuracy=float(np.mean(correct)),
    )


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _quartiles(values: np.ndarray) -> Quartiles:
    """Quartiles with +∞ entries (never flipped); ``method="lower"`` picks observed values, so
    a quantile is either an ε that was reported or +∞ (→ None), never an interpolation."""
    if not len(values):
        return Quartiles(n=0, q1=None, median=None, q3=None)
    q1, median, q3 = (
        _finite_or_none(v) for v in np.quantile(values, [0.25, 0.5, 0.75], method="lower")
    )
    return Quartiles(n=len(values), q1=q1, median=median, q3=q3)


def flip_distribution(
    flips: Sequence[FlipReport],
    labels: Sequence[int],
    epsilons: Sequence[float],
    class_names: Sequence[str] | None = None,
) -> FlipDistribution:
    """Distribution of the smallest flipping ε over the images whose clean label is right."""
    if len(flips) != len(labels) or not flips:
        raise ValueError(f"need one label per flip search, got {len(flips)} and {len(labels)}")
    norms = {f.norm for f in flips}
    if len(norms) != 1:
        raise ValueError(f"flip searches mix norms {sorted(norms)}")
    correct = [(f, y) for f, y in zip(flips, labels, strict=True) if f.clean_label == y]
    upper = np.array([np.inf if f.upper is None else f.upper for f, _ in correct])
    truth = np.array([y for _, y in correct], dtype=int)

    def name(k: int) -> str:
        return class_names[k] if class_names is not None else str(k)

    return FlipDistribution(
        norm=norms.pop(),
        n_images=len(flips),
        n_correct=len(correct),
        overall=_quartiles(upper),
        per_class={name(k): _quartiles(upper[truth == k]) for k in sorted(set(labels))},
        epsilons=[float(e) for e in epsilons],
        flipped_fraction=[float(np.mean(upper <= e)) if len(upper) else 0.0 for e in epsilons],
    )
