"""The parity gate: a serving runtime must agree with Keras fp32 before it may serve a model.

A faster runtime is only worth having if it answers what the stored model answers. The gate runs
the Keras fp32 forward pass and the candidate on the same calibration pixels and compares their
class probabilities: the share of images whose top-1 class agrees (gate: at least
:data:`MIN_TOP1_AGREEMENT`) and the largest absolute probability difference, which is reported
(it is what a caller reading ``probabilities`` sees change) but not gated, since a threshold on it
would have no analysis behind it yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, Field

#: the issue's acceptance bar: at most one disagreement in a thousand images
MIN_TOP1_AGREEMENT = 0.999
#: images per forward call while gating (bounds the memory of a 224-px batch)
GATE_BATCH = 16

Probabilities = Callable[[np.ndarray], np.ndarray]


class ParityReport(BaseModel):
    """One gate run, as recorded next to the runtime's artefact."""

    runtime: str
    calibration: str = Field(description="where the images came from, e.g. 'validation split'")
    images: int
    calibration_sha256: str = Field(description="sha256 of the calibration pixels")
    top1_agreement: float
    disagreements: int
    max_abs_probability_diff: float
    min_top1_agreement: float = MIN_TOP1_AGREEMENT
    passed: bool

    def reason(self) -> str:
        """Why the gate failed, in one line (empty when it passed)."""
        if self.passed:
            return ""
        return (
            f"{self.runtime} agrees with keras fp32 on top-1 for {self.top1_agreement:.2%} of "
            f"{self.images} {self.calibration} images (needs {self.min_top1_agreement:.1%}); "
            f"max |Δp| {self.max_abs_probability_diff:.3g}"
        )


def pixels_sha256(pixels: np.ndarray) -> str:
    """A fingerprint of the calibration pixels, so a recorded gate is reused only for them."""
    data = np.ascontiguousarray(pixels, dtype=np.float32)
    return hashlib.sha256(str(data.shape).encode() + data.tobytes()).hexdigest()


def in_batches(run: Probabilities, pixels: np.ndarray, batch: int = GATE_BATCH) -> np.ndarray:
    """``run`` over ``pixels`` ``batch`` images at a time, concatenated."""
    return np.concatenate([run(pixels[i : i + batch]) for i in range(0, len(pixels), batch)])


def compare(
    runtime: str, reference: np.ndarray, candidate: np.ndarray, calibration: str, sha256: str
) -> ParityReport:
    """The gate's verdict on two (N, classes) probability arrays for the same N images."""
    if reference.shape != candidate.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(
            f"parity needs two equal, non-empty (N, classes) arrays: {reference.shape} vs "
            f"{candidate.shape}"
        )
    agree = reference.argmax(axis=1) == candidate.argmax(axis=1)
    agreement = float(agree.mean())
    return ParityReport(
        runtime=runtime,
        calibration=calibration,
        images=len(reference),
        calibration_sha256=sha256,
        top1_agreement=agreement,
        disagreements=int((~agree).sum()),
        max_abs_probability_diff=float(np.abs(reference - candidate).max()),
        passed=agreement >= MIN_TOP1_AGREEMENT and bool(np.isfinite(candidate).all()),
    )


def check_parity(
    runtime: str,
    reference: Probabilities,
    candidate: Probabilities,
    pixels: np.ndarray,
    calibration: str,
) -> ParityReport:
    """Run both forward passes over ``pixels`` (prepared model input) and :func:`compare`."""
    return compare(
        runtime,
        in_batches(reference, pixels),
        in_batches(candidate, pixels),
        calibration,
        pixels_sha256(pixels),
    )
