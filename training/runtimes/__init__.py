"""Serving runtimes for the forward (probabilities) path: Keras fp32, Keras bf16, OpenVINO fp32,
OpenVINO bf16 (with a margin guard) and OpenVINO int8.

:func:`serving_forward` picks the forward pass that serves a stored model behind a parity gate
against Keras fp32 (:mod:`training.runtimes.parity`), falling back to Keras when a runtime cannot
be derived or does not agree. Gradients never go through here: attacks, Grad-CAM and robustness
use the Keras model (``training.gradients``) on the same weights.
"""

from training.runtimes.artefact import RUNTIMES_DIR, ArtefactRecord, read_record, runtime_dir
from training.runtimes.calibration import (
    CALIBRATION_LIMIT,
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
from training.runtimes.parity import MIN_TOP1_AGREEMENT, ParityReport, check_parity
from training.runtimes.served import ServingCache, ServingModel, forward_of, runtime_summary
from training.runtimes.serving import serving_forward

__all__ = [
    "CALIBRATION_LIMIT",
    "KERAS",
    "KERAS_BF16",
    "MIN_TOP1_AGREEMENT",
    "OPENVINO",
    "OPENVINO_BF16",
    "OPENVINO_INT8",
    "RUNTIMES",
    "RUNTIMES_DIR",
    "ArtefactRecord",
    "Calibration",
    "CalibrationUnavailable",
    "Forward",
    "ParityReport",
    "ServingCache",
    "ServingForward",
    "ServingModel",
    "check_parity",
    "forward_of",
    "keras_fp32",
    "runtime_summary",
    "read_record",
    "runtime_dir",
    "serving_forward",
    "training_calibration",
    "validation_calibration",
]
