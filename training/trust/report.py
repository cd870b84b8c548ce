"""The trust section of an evaluation: per model, certified accuracy vs radius and the
distribution of the smallest flipping ε, over one set of prepared images.

Written beside the robustness report as ``<stem>_trust.json`` (versioned schema), ``.md`` (one
table) and ``_trust_certified.png`` / ``_trust_flip.png`` (the curves, every model on one plot).
The σ policy is :func:`training.trust.answer.smoothing_sigma`'s: a model trained without noise
is certified only at an explicitly given σ, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from training.store import LoadedModel
from training.trust.answer import smoothing_sigma
from training.trust.flip import FlipSpec, smallest_flip
from training.trust.render import certified_accuracy_png, flipped_fraction_png
from training.trust.smoothing import SmoothingSpec, certify
from training.trust.summary import (
    CertifiedAccuracyCurve,
    FlipDistribution,
    certified_accuracy_curve,
    flip_distribution,
)

SCHEMA_VERSION = 1
RADII = (0.0, 16.0, 32.0, 64.0, 128.0, 256.0)  # L2, pixel units
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # L∞, pixel units


class ModelTrust(BaseModel):
    """One model's section; ``certified`` / ``flip`` are None when not asked."""

    ref: str
    weights_sha256: str
    certified: CertifiedAccuracyCurve | None = None
    sigma_warning: str | None = None
    flip: FlipDistribution | None = None


class TrustReport(BaseModel):
    """Every model's section, on the same images."""

    schema_version: int = SCHEMA_VERSION
    n_images: int
    class_names: list[str]
    models: list[ModelTrust]


def evaluate_trust(
    loaded: Sequence[LoadedModel],
    pixels: np.ndarray,
    labels: np.ndarray,
    certify_spec: dict | None = None,
    flip_spec: FlipSpec | None = None,
    noise_sigma: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrustReport:
    """Certify (``certify_spec``: SmoothingSpec fields but σ) and/or search the smallest L∞
    flip (``flip_spec``) of every prepared image for every model.

    Raises :class:`~training.trust.answer.NoiseSigmaMissing` for a model trained without noise
    when certifying without ``noise_sigma``.
    """
    total, done = len(loaded) * len(pixels), 0
    sections = []
    for model in loaded:
        manifest = model.manifest
        section = ModelTrust(ref=manifest.ref, weights_sha256=manifest.weights_sha256)
        certifications, flips = [], []
        sigma = warning = None
        if certify_spec is not None:
            sigma, warning = smoothing_sigma(manifest, noise_sigma)
        for x in pixels:
            if sigma is not None:
                spec = SmoothingSpec(sigma=sigma, **(certify_spec or {}))
                certifications.append(certify(model.model, x, spec))
            if flip_spec is not None:
                flips.append(smallest_flip(model.model, x, flip_spec).report)
            done += 1
            if progress is not None:
                progress(done, total)
        if certifications:
            section.certified = certified_accuracy_curve(certifications, labels.tolist(), RADII)
            section.sigma_warning = warning
        if flips:
            section.flip = flip_distribution(flips, labels.tolist(), EPSILONS, manifest.class_names)
        sections.append(section)
    class_names = list(loaded[0].manifest.class_names) if loaded else []
    return TrustReport(n_images=len(pixels), class_names=class_names, models=sections)


def _cell(value: float | None) -> str:
    return "beyond search" if value is None else f"{value:g}"


def markdown(report: TrustReport) -> str:
    """One row per model: certified accuracy (and balanced, in brackets) at each radius,
    flip-ε quartiles."""
    radii = " | ".join(f"cert. acc. r≥{r:g}" for r in RADII)
    lines = [
        f"Trust on {report.n_images} images (schema v{report.schema_version}); radii L2 and ε "
        "L∞ in pixels of the [0, 255] input.",
        "",
        f"| model | σ | {radii} | abstain | flip ε q1 | median | q3 |",
        "|---" * (len(RADII) + 6) + "|",
    ]
    for section in report.models:
        curve, flip = section.certified, section.flip
        cert = (
            " | ".join(
                f"{a:.3f} (bal. {b:.3f})"
                for a, b in zip(
                    curve.certified_accuracy, curve.balanced_certified_accuracy, strict=True
                )
            )
            if curve
            else " | ".join("–" for _ in RADII)
        )
        sigma = f"{curve.sigma:g}" if curve else "–"
        abstain = f"{curve.abstain_fraction:.3f}" if curve else "–"
        quart = (
            " | ".join(_cell(v) for v in (flip.overall.q1, flip.overall.median, flip.overall.q3))
            if flip
            else "– | – | –"
        )
        lines.append(f"| {section.ref} | {sigma} | {cert} | {abstain} | {quart} |")
    warnings = [f"- {s.ref}: {s.sigma_warning}" for s in report.models if s.sigma_warning]
    return "\n".join(lines + ([""] + warnings if warnings else [])) + "\n"


def write(report: TrustReport, out: Path) -> list[Path]:
    """``out`` (.json) plus its .md and PNG curves; the paths written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.model_dump_json(indent=1))
    written = [out, out.with_suffix(".md")]
    written[1].write_text(markdown(report))
    curves = {s.ref: s.certified for s in report.models if s.certified is not None}
    if curves:
        path = out.with_name(f"{out.stem}_certified.png")
        path.write_bytes(certified_accuracy_png(curves))
        written.append(path)
    flips = {s.ref: s.flip for s in report.models if s.flip is not None}
    if flips:
        path = out.with_name(f"{out.stem}_flip.png")
        path.write_bytes(flipped_fraction_png(flips))
        written.append(path)
    return written
