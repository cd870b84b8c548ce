"""``openvino-int8``: the model's OpenVINO IR quantised to int8 by NNCF, cached next to it.

Post-training quantisation (``nncf.quantize``, the performance preset: symmetric int8 weights and
activations) of the fp32 IR of :mod:`training.runtimes.openvino_ir`, with its activation ranges
calibrated on real images of the model's own *training* split (:func:`training_calibration`):
int8 rounds every activation to one of 256 levels inside those ranges, so they must come from
the images the model was fitted to, and never from the validation images the parity gate then
judges it on. CPUs with AVX-512 VNNI or AMX run the int8 convolutions and matmuls natively.

The IR lives in ``<model dir>/runtimes/openvino-int8/`` with ``artefact.json``: the stored
weights' sha256, its own sha256, the OpenVINO, Keras and NNCF versions, and the calibration
images' sha256 (:class:`~training.runtimes.artefact.QuantisationRecord`). It is reused only while
all of those still match, otherwise quantised again.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from training.runtimes.artefact import ArtefactRecord, QuantisationRecord
from training.runtimes.calibration import Calibration
from training.runtimes.forward import OPENVINO_INT8
from training.runtimes.openvino_ir import (
    XML_FILE,
    converter_versions,
    ensure_ir,
    ir_record,
    publish,
    valid_ir,
)
from training.runtimes.parity import pixels_sha256

PRESET = "performance"


def quantiser_versions() -> dict[str, str]:
    import nncf

    return {**converter_versions(), "nncf": nncf.__version__}


def _quantised_on(calibration: Calibration) -> QuantisationRecord:
    return QuantisationRecord(
        source=calibration.source,
        images=len(calibration.pixels),
        pixels_sha256=pixels_sha256(calibration.pixels),
        preset=PRESET,
    )


def quantise(fp32_xml: Path, calibration: Calibration, destination_xml: Path) -> None:
    """Quantise the IR at ``fp32_xml`` on ``calibration``'s images (one per statistics pass) and
    save the int8 IR at ``destination_xml`` (weights kept in int8, the rest in fp32)."""
    import nncf
    import openvino

    model = openvino.Core().read_model(str(fp32_xml))
    images = [np.ascontiguousarray(p[None], dtype=np.float32) for p in calibration.pixels]
    quantised = nncf.quantize(
        model,
        nncf.Dataset(images),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(images),
    )
    openvino.save_model(quantised, str(destination_xml), compress_to_fp16=False)


def ensure_int8_ir(
    model: keras.Model,
    weights_sha256: str,
    fp32_directory: Path,
    directory: Path,
    calibration: Calibration,
) -> ArtefactRecord:
    """The int8 IR in ``directory``: the cached one if it still derives from these weights,
    versions and calibration images, else quantised anew from the fp32 IR in ``fp32_directory``
    (converted first when that is missing or stale)."""
    quantised_on = _quantised_on(calibration)

    def valid() -> ArtefactRecord | None:
        record = valid_ir(directory, weights_sha256, quantiser_versions())
        return record if record is not None and record.quantisation == quantised_on else None

    def make(staging: Path) -> ArtefactRecord:
        ensure_ir(model, weights_sha256, fp32_directory)
        quantise(fp32_directory / XML_FILE, calibration, staging / XML_FILE)
        return ir_record(OPENVINO_INT8, weights_sha256, staging, quantiser_versions(), quantised_on)

    return valid() or publish(directory, make, valid)
