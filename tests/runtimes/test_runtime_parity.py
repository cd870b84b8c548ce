"""The parity gate and the runtime choice (training/runtimes/) on real HAM10000 images.

The model is the tiny CNN trained on real HAM10000 at 32 px (tests.support.tiny_models); the
calibration images are real HAM10000 test images, or the stored spec's real validation split.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.runtime_models import (
    model_dir,
    plant_channel_swapped_ir,
    store_ham_model,
)
from training.runtimes import (
    KERAS,
    KERAS_BF16,
    MIN_TOP1_AGREEMENT,
    OPENVINO,
    Calibration,
    check_parity,
    keras_fp32,
    read_record,
    runtime_dir,
    serving_forward,
    validation_calibration,
)
from training.runtimes.bf16 import POLICY, bf16_clone
from training.runtimes.openvino_ir import artefact_sha256


def test_gate_accepts_identical_and_rejects_channel_swapped_forward(tiny_ham):
    reference = keras_fp32(tiny_ham.model)
    same = check_parity("keras", reference, reference, tiny_ham.x_test, "HAM10000 test")
    assert same.passed and same.top1_agreement == 1.0 and same.max_abs_probability_diff == 0.0

    def swapped(pixels: np.ndarray) -> np.ndarray:
        return reference(pixels[..., ::-1])

    broken = check_parity("swapped", reference, swapped, tiny_ham.x_test, "HAM10000 test")
    assert not broken.passed
    assert broken.disagreements > 0 and broken.top1_agreement < MIN_TOP1_AGREEMENT
    assert "swapped agrees with keras fp32" in broken.reason()


def test_openvino_ir_is_cached_next_to_the_model_and_passes_the_gate(ham_stored, tiny_ham):
    root, loaded = ham_stored
    calibration = Calibration(tiny_ham.x_test, "HAM10000 test")
    served = serving_forward(loaded, OPENVINO, model_dir(root, loaded), calibration)
    assert (served.runtime, served.requested, served.fallback_reason) == (OPENVINO, OPENVINO, None)

    directory = runtime_dir(model_dir(root, loaded), OPENVINO)
    record = read_record(directory)
    assert record is not None and record.parity is not None
    assert record.source_weights_sha256 == loaded.manifest.weights_sha256
    assert served.artefact_sha256 == record.artefact_sha256 == artefact_sha256(directory)
    assert record.parity.passed and record.parity.images == len(tiny_ham.x_test)
    assert record.parity.top1_agreement >= MIN_TOP1_AGREEMENT

    reference = keras_fp32(loaded.model)(tiny_ham.x_test)
    probabilities = served(tiny_ham.x_test)
    assert np.array_equal(probabilities.argmax(1), reference.argmax(1))

    # a batch split across the throughput compilation's streams answers as its images do one
    # at a time (the latency compilation); float32 in other blockings reassociates sums, ~1e-6
    one_at_a_time = np.concatenate([served(image[None]) for image in tiny_ham.x_test])
    assert np.array_equal(probabilities.argmax(1), one_at_a_time.argmax(1))
    assert np.abs(probabilities - one_at_a_time).max() < 1e-4

    # a second load reuses the cached IR: it is not converted again
    converted = (directory / "model.bin").stat().st_mtime_ns
    again = serving_forward(loaded, OPENVINO, model_dir(root, loaded), calibration)
    assert again.artefact_sha256 == served.artefact_sha256
    assert (directory / "model.bin").stat().st_mtime_ns == converted


def test_a_broken_conversion_fails_the_gate_and_falls_back_to_keras(ham_stored, tiny_ham, caplog):
    root, loaded = ham_stored
    plant_channel_swapped_ir(root, loaded)
    calibration = Calibration(tiny_ham.x_test, "HAM10000 test")
    with caplog.at_level("WARNING", logger="training.runtimes"):
        served = serving_forward(loaded, OPENVINO, model_dir(root, loaded), calibration)
    assert (served.runtime, served.requested, served.artefact_sha256) == (KERAS, OPENVINO, None)
    assert served.fallback_reason is not None and "parity gate failed" in served.fallback_reason
    assert "serving keras fp32 instead of openvino" in caplog.text
    record = read_record(runtime_dir(model_dir(root, loaded), OPENVINO))
    assert record is not None and record.parity is not None and not record.parity.passed
    # the fallback answers exactly what Keras fp32 answers
    expected = keras_fp32(loaded.model)(tiny_ham.x_test)
    assert np.array_equal(served(tiny_ham.x_test), expected)


def test_the_gate_uses_the_models_own_validation_split(ham_stored, data_dir, monkeypatch):
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(data_dir))
    root, loaded = ham_stored
    calibration = validation_calibration(loaded.manifest)
    assert calibration.source == "validation split"
    assert calibration.pixels.shape[1:] == (32, 32, 3) and len(calibration.pixels) >= 7
    served = serving_forward(loaded, OPENVINO, model_dir(root, loaded))
    record = read_record(runtime_dir(model_dir(root, loaded), OPENVINO))
    assert record is not None and record.parity is not None
    assert record.parity.calibration == "validation split"
    assert record.parity.images == len(calibration.pixels)
    assert served.runtime == (OPENVINO if record.parity.passed else KERAS)


def test_without_calibration_images_the_runtime_falls_back(tiny_ham, tmp_path):
    root, loaded = store_ham_model(tiny_ham.model, tmp_path / "models", with_spec=False)
    served = serving_forward(loaded, OPENVINO, model_dir(root, loaded))
    assert served.runtime == KERAS and served.requested == OPENVINO
    assert "no calibration images" in (served.fallback_reason or "")
    assert not runtime_dir(model_dir(root, loaded), OPENVINO).exists()  # nothing converted


def test_keras_bf16_clone_keeps_the_weights_and_is_gated(ham_stored, tiny_ham):
    root, loaded = ham_stored
    clone = bf16_clone(loaded.model)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(clone.get_weights(), loaded.model.get_weights(), strict=True)
    )
    policies = {layer.name: layer.dtype_policy.name for layer in clone.layers[1:]}
    *inner, output = policies.values()
    assert set(inner) == {POLICY} and output == "float32"

    calibration = Calibration(tiny_ham.x_test, "HAM10000 test")
    served = serving_forward(loaded, KERAS_BF16, model_dir(root, loaded), calibration)
    record = read_record(runtime_dir(model_dir(root, loaded), KERAS_BF16))
    assert record is not None and record.parity is not None and record.artefact_sha256 is None
    assert served.runtime == (KERAS_BF16 if record.parity.passed else KERAS)


def test_an_unknown_runtime_is_refused(ham_stored):
    root, loaded = ham_stored
    with pytest.raises(ValueError, match="unknown serving runtime"):
        serving_forward(loaded, "tensorrt", model_dir(root, loaded))
