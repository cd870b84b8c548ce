"""Choosing the forward pass that serves a stored model: derive, gate, fall back.

``serving_forward`` is the one call a server makes per loaded model. For ``keras`` it returns the
Keras fp32 forward pass. For any other runtime it derives the runtime's form of the model (the
cached OpenVINO IR, its int8 quantisation on the model's training split, the IR in bf16 with its
margin guard measured on that split, the Keras bf16 clone), runs
the parity gate against Keras fp32 on the calibration images (the model's validation split unless
the caller gives its own), records the result in the runtime's ``artefact.json`` and serves the
runtime only if it passed. Anything short of that (no calibration images, a failed conversion or
quantisation, a failed gate) serves Keras fp32 and logs why: a deployment that asks for a faster
runtime never gets wrong answers or no answers for it. ``openvino-bf16`` tries ``openvino`` (f32,
gated the same way) before Keras: on a CPU without bf16 units, or for a model bf16 cannot serve
even behind its guard, the f32 IR is still faster than Keras.

A gate that already passed or failed on the same artefact (IR bytes), calibration pixels and
library versions is reused from the record instead of being run again at every start; the bf16
clone has no artefact of its own, so its gate runs at every load.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import keras

from training.runtimes.artefact import ArtefactRecord, read_record, runtime_dir, write_record
from training.runtimes.bf16 import keras_bf16
from training.runtimes.calibration import (
    Calibration,
    CalibrationUnavailable,
    training_calibration,
    validation_calibration,
)
from training.runtimes.forward import (
    KERAS,
    KERAS_BF16,
    OPENVINO,
    OPENVINO_BF16,
    OPENVINO_INT8,
    RUNTIMES,
    Forward,
    ServingForward,
    keras_fp32,
)
from training.runtimes.openvino_bf16 import Bf16Unavailable, guarded_bf16
from training.runtimes.openvino_int8 import ensure_int8_ir
from training.runtimes.openvino_ir import ensure_ir, openvino_forward
from training.runtimes.parity import ParityReport, check_parity, pixels_sha256
from training.store import LoadedModel

log = logging.getLogger("training.runtimes")


def _bf16_record(loaded: LoadedModel) -> ArtefactRecord:
    return ArtefactRecord(
        runtime=KERAS_BF16,
        source_weights_sha256=loaded.manifest.weights_sha256,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions={"keras": keras.__version__, "backend": keras.backend.backend()},
    )


def _derive(
    loaded: LoadedModel,
    runtime: str,
    model_dir: Path,
    quantisation: Calibration | None,
) -> tuple[Forward, ArtefactRecord]:
    """The runtime's forward pass and its record (an IR is converted or reused; int8's ranges
    and bf16's guard need training images, ``quantisation`` or the model's training split)."""
    directory = runtime_dir(model_dir, runtime)
    weights = loaded.manifest.weights_sha256
    if runtime == OPENVINO:
        record = ensure_ir(loaded.model, weights, directory)
        return openvino_forward(directory), record
    fp32_directory = runtime_dir(model_dir, OPENVINO)
    if runtime == OPENVINO_INT8:
        images = quantisation or training_calibration(loaded.manifest)
        record = ensure_int8_ir(loaded.model, weights, fp32_directory, directory, images)
        return openvino_forward(directory), record
    if runtime == OPENVINO_BF16:
        images = quantisation or training_calibration(loaded.manifest)
        return guarded_bf16(loaded.model, weights, fp32_directory, directory, images)
    return keras_bf16(loaded.model), _bf16_record(loaded)


def _recorded_gate(
    record: ArtefactRecord, directory: Path, calibration: Calibration
) -> ParityReport | None:
    """The gate recorded for this very artefact (same IR bytes, made by the installed versions)
    and calibration set, if any (runtimes with an artefact of their own only)."""
    if record.artefact_sha256 is None:
        return None
    stored = read_record(directory)
    if stored is None or stored.parity is None or stored.artefact_sha256 != record.artefact_sha256:
        return None
    parity = stored.parity
    same_set = parity.calibration_sha256 == pixels_sha256(calibration.pixels)
    return parity if same_set and parity.calibration == calibration.source else None


#: the runtime tried next when one fails, before Keras fp32: bf16's own IR in f32
FALLS_BACK_TO = {OPENVINO_BF16: OPENVINO}


def _fallback(loaded: LoadedModel, runtime: str, reason: str) -> ServingForward:
    return ServingForward(KERAS, runtime, keras_fp32(loaded.model), fallback_reason=reason)


def _gated(
    loaded: LoadedModel,
    runtime: str,
    model_dir: Path,
    calibration: Calibration,
    quantisation: Calibration | None,
) -> ServingForward:
    """``runtime`` derived and gated on ``calibration``, or Keras fp32 with the reason."""
    reference = keras_fp32(loaded.model)
    directory = runtime_dir(model_dir, runtime)
    try:
        candidate, record = _derive(loaded, runtime, model_dir, quantisation)
    except CalibrationUnavailable as exc:
        purpose = "quantise" if runtime == OPENVINO_INT8 else "measure the bf16 guard"
        return _fallback(loaded, runtime, f"no training images to {purpose} on: {exc}")
    except Bf16Unavailable as exc:
        return _fallback(loaded, runtime, str(exc))
    except Exception as exc:  # a converter's failure must cost speed, never the service
        return _fallback(loaded, runtime, f"{runtime} conversion failed: {exc}")
    report = _recorded_gate(record, directory, calibration)
    if report is None:
        report = check_parity(runtime, reference, candidate, calibration.pixels, calibration.source)
        write_record(directory, record.model_copy(update={"parity": report}))
    log.info(
        "%s: %s parity on %d %s images: top-1 agreement %.4f, max |Δp| %.3g (%s)",
        loaded.manifest.ref,
        runtime,
        report.images,
        report.calibration,
        report.top1_agreement,
        report.max_abs_probability_diff,
        "passed" if report.passed else "failed",
    )
    if not report.passed:
        return _fallback(loaded, runtime, f"parity gate failed: {report.reason()}")
    return ServingForward(runtime, runtime, candidate, artefact_sha256=record.artefact_sha256)


def serving_forward(
    loaded: LoadedModel,
    runtime: str,
    model_dir: Path,
    calibration: Calibration | None = None,
    quantisation: Calibration | None = None,
) -> ServingForward:
    """The forward pass that serves ``loaded`` when ``runtime`` is asked for (see the module).

    ``model_dir`` is the stored version's directory; ``calibration`` (the gate's images) defaults
    to the model's own validation split, ``quantisation`` (the training images of
    ``openvino-int8``'s ranges and ``openvino-bf16``'s guard) to its training split. A runtime
    that cannot serve is replaced by :data:`FALLS_BACK_TO`'s, gated the same way, then by Keras
    fp32; the answer keeps the runtime asked for and every reason.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown serving runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    if runtime == KERAS:
        return ServingForward(KERAS, KERAS, keras_fp32(loaded.model))
    if calibration is None:
        try:
            calibration = validation_calibration(loaded.manifest)
        except CalibrationUnavailable as exc:
            served = _fallback(loaded, runtime, f"no calibration images for the parity gate: {exc}")
            return _logged(loaded, served)
    served = _gated(loaded, runtime, model_dir, calibration, quantisation)
    second = FALLS_BACK_TO.get(runtime)
    if served.runtime == runtime or second is None:
        return _logged(loaded, served)
    instead = _gated(loaded, second, model_dir, calibration, quantisation)
    reason = f"{served.fallback_reason}; {instead.fallback_reason or f'{second} serves'}"
    return _logged(loaded, replace(instead, requested=runtime, fallback_reason=reason))


def _logged(loaded: LoadedModel, served: ServingForward) -> ServingForward:
    """``served``, with a warning in the log when it is not the runtime asked for."""
    if served.runtime != served.requested:
        log.warning(
            "%s: serving %s instead of %s: %s",
            loaded.manifest.ref,
            "keras fp32" if served.runtime == KERAS else served.runtime,
            served.requested,
            served.fallback_reason,
        )
    return served
