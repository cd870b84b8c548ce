"""``openvino-bf16``: the OpenVINO IR run in bfloat16, with a margin guard that recomputes the
images the model is nearly undecided about in float32.

On a CPU with bf16 units (AVX-512 BF16 on AMD Zen 4, AMX on Intel) OpenVINO runs the IR's
convolutions in bf16 when asked to (``INFERENCE_PRECISION_HINT``), several times faster than in
f32 (``bench/serve_runtimes.py``). bf16 keeps 8 mantissa bits, so probabilities move by up to
about 1e-2, and an image whose two leading classes are that close can change its top-1 class: on
trained RetinaMNIST models, 0.3-0.8 % of images did, too many for the parity gate's 99.9 %, and
every one of them had a float32 top-1/top-2 gap below 0.014.

**The guard.** Let every class probability of bf16 be within ``e`` of float32's for an image. If
bf16's top-1 class ``j`` differs from float32's ``i``, then bf16's own top-1/top-2 gap is at most
``p_bf16[j] − p_bf16[i] ≤ (p_f32[j] + e) − (p_f32[i] − e) ≤ 2e``, because ``p_f32[j] ≤ p_f32[i]``.
So an image whose bf16 gap exceeds ``2e`` keeps float32's top-1 class, and only images at or below
the guard ``2e`` need float32: the same IR, compiled in f32, recomputes exactly those. ``e`` is
not known for an unseen image; it is estimated as :data:`SAFETY` times the largest ``|Δp|``
measured on the model's own *training* images (never the validation images the parity gate then
judges the guarded runtime on). The gate still decides, as for every runtime: the guard is an
argument for why bf16 can pass it, not a replacement for it.

What is served is therefore bf16's probabilities for decided images (within ``e`` of float32's)
and float32's for undecided ones. :attr:`GuardedBf16Forward.recomputed` counts the images sent to
float32, which is what the guard costs. The guard's record (``artefact.json`` under
``runtimes/openvino-bf16/``) holds ``e``, the guard and the images it was measured on; the IR it
runs is the ``openvino`` runtime's, whose sha256 it names. A CPU without bf16 units would run the
bf16 hint as f32: :func:`guarded_bf16` refuses it (:class:`Bf16Unavailable`) instead of serving
f32 under a bf16 name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from training.runtimes.artefact import ArtefactRecord, GuardRecord, read_record, write_record
from training.runtimes.calibration import Calibration
from training.runtimes.forward import OPENVINO_BF16, Forward
from training.runtimes.openvino_ir import (
    COMPILE_CONFIG,
    XML_FILE,
    OpenVinoForward,
    converter_versions,
    ensure_ir,
)
from training.runtimes.parity import in_batches, pixels_sha256

BF16_CONFIG = {**COMPILE_CONFIG, "INFERENCE_PRECISION_HINT": "bf16"}
#: margin on the largest bf16 error seen in the measured sample, for images whose error exceeds
#: it: the guard then covers errors up to twice the sample's maximum
SAFETY = 2.0


class Bf16Unavailable(RuntimeError):
    """This CPU has no bf16 units: OpenVINO would compute the bf16 hint in f32."""


def top_gap(probabilities: np.ndarray) -> np.ndarray:
    """Each row's top-1 minus top-2 probability (how decided the model is)."""
    top2 = np.partition(probabilities, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


class GuardedBf16Forward:
    """bf16 probabilities, with every image whose bf16 top-1/top-2 gap is ≤ ``guard`` recomputed
    by ``fp32`` (see the module). Called from one thread at a time, like every forward pass."""

    def __init__(self, bf16: Forward, fp32: Forward, guard: float) -> None:
        self.bf16, self.fp32, self.guard = bf16, fp32, guard
        self.images = 0
        self.recomputed = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        probabilities = self.bf16(pixels)
        undecided = np.flatnonzero(top_gap(probabilities) <= self.guard)
        if len(undecided):
            probabilities[undecided] = self.fp32(pixels[undecided])
        self.images += len(pixels)
        self.recomputed += len(undecided)
        return probabilities


def bf16_units() -> bool:
    """Whether OpenVINO's CPU plugin can compute in bf16 on this machine."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def measure_guard(bf16: Forward, fp32: Forward, images: Calibration) -> GuardRecord:
    """The guard ``2 × SAFETY × max |Δp|`` from bf16 vs f32 on ``images`` (training images)."""
    difference = np.abs(in_batches(bf16, images.pixels) - in_batches(fp32, images.pixels))
    largest = float(difference.max())
    return GuardRecord(
        source=images.source,
        images=len(images.pixels),
        pixels_sha256=pixels_sha256(images.pixels),
        max_abs_probability_diff=largest,
        guard=2 * SAFETY * largest,
    )


def _recorded(
    directory: Path, ir: ArtefactRecord, versions: dict[str, str], images: Calibration
) -> ArtefactRecord | None:
    """The guard recorded for this IR, these versions and these training images, if any."""
    record = read_record(directory)
    if record is None or record.guard is None or record.versions != versions:
        return None
    same_ir = (record.source_weights_sha256, record.artefact_sha256) == (
        ir.source_weights_sha256,
        ir.artefact_sha256,
    )
    same_images = record.guard.pixels_sha256 == pixels_sha256(images.pixels)
    return record if same_ir and same_images else None


def guarded_bf16(
    model: keras.Model,
    weights_sha256: str,
    fp32_directory: Path,
    directory: Path,
    images: Calibration,
) -> tuple[GuardedBf16Forward, ArtefactRecord]:
    """The guarded bf16 forward pass of the IR in ``fp32_directory`` (converted first when missing
    or stale) and its record in ``directory``: the recorded guard when it was measured on this IR
    and these ``images``, else measured now and recorded. Raises :class:`Bf16Unavailable` on a
    CPU without bf16 units."""
    if not bf16_units():
        raise Bf16Unavailable("this CPU has no bf16 units: OpenVINO would run the bf16 hint in f32")
    ir = ensure_ir(model, weights_sha256, fp32_directory)
    bf16 = OpenVinoForward(fp32_directory / XML_FILE, BF16_CONFIG)
    if bf16.precision != "bf16":
        raise Bf16Unavailable(f"OpenVINO compiled the bf16 hint as {bf16.precision} on this CPU")
    fp32 = OpenVinoForward(fp32_directory / XML_FILE, split_batches=False)
    versions = converter_versions()
    record = _recorded(directory, ir, versions, images)
    if record is None:
        record = ArtefactRecord(
            runtime=OPENVINO_BF16,
            source_weights_sha256=weights_sha256,
            artefact_sha256=ir.artefact_sha256,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            versions=versions,
            guard=measure_guard(bf16, fp32, images),
        )
        write_record(directory, record)
    assert record.guard is not None
    return GuardedBf16Forward(bf16, fp32, record.guard.guard), record
