"""``openvino-int8`` (training/runtimes/openvino_int8.py) on real HAM10000 images.

The model is the tiny CNN trained on real HAM10000 at 32 px, stored with a spec whose splits are
real HAM10000: the quantisation is calibrated on its training split, the parity gate judges the
result on its validation split. Whether int8 passes the gate is the gate's call (a weak model
with small top-1 margins often does not); either way what serves must be what the gate allowed.
"""

from __future__ import annotations

import numpy as np

from tests.support.runtime_models import PER_SPLIT, model_dir, store_ham_model
from training.runtimes import (
    KERAS,
    OPENVINO_INT8,
    Calibration,
    keras_fp32,
    read_record,
    runtime_dir,
    serving_forward,
)
from training.runtimes.openvino_ir import XML_FILE, artefact_sha256


def test_int8_is_quantised_on_the_training_split_and_serves_only_past_the_gate(
    ham_stored, tiny_ham, data_dir, monkeypatch
):
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(data_dir))
    root, loaded = ham_stored
    served = serving_forward(loaded, OPENVINO_INT8, model_dir(root, loaded))

    directory = runtime_dir(model_dir(root, loaded), OPENVINO_INT8)
    record = read_record(directory)
    assert record is not None and record.parity is not None and record.quantisation is not None
    assert record.quantisation.source == "training split"
    assert 0 < record.quantisation.images <= PER_SPLIT
    assert record.parity.calibration == "validation split"
    assert record.quantisation.pixels_sha256 != record.parity.calibration_sha256
    assert record.source_weights_sha256 == loaded.manifest.weights_sha256
    assert record.artefact_sha256 == artefact_sha256(directory)
    assert "nncf" in record.versions
    graph = (directory / XML_FILE).read_text()
    assert 'type="FakeQuantize"' in graph and 'element_type="i8"' in graph  # really int8
    assert record.parity.max_abs_probability_diff > 0  # and it answers differently from fp32

    reference = keras_fp32(loaded.model)(tiny_ham.x_test)
    if record.parity.passed:
        assert (served.runtime, served.artefact_sha256) == (OPENVINO_INT8, record.artefact_sha256)
    else:
        assert (served.runtime, served.requested) == (KERAS, OPENVINO_INT8)
        assert "parity gate failed" in (served.fallback_reason or "")
        assert np.array_equal(served(tiny_ham.x_test), reference)

    # the next load reuses the quantised IR and its recorded gate: nothing is quantised again
    quantised = (directory / "model.bin").stat().st_mtime_ns
    again = serving_forward(loaded, OPENVINO_INT8, model_dir(root, loaded))
    assert (again.runtime, again.artefact_sha256) == (served.runtime, served.artefact_sha256)
    assert (directory / "model.bin").stat().st_mtime_ns == quantised


def test_int8_without_training_images_falls_back_to_keras(tiny_ham, tmp_path):
    root, loaded = store_ham_model(tiny_ham.model, tmp_path / "models", with_spec=False)
    calibration = Calibration(tiny_ham.x_test, "HAM10000 test")  # the gate could run ...
    served = serving_forward(loaded, OPENVINO_INT8, model_dir(root, loaded), calibration)
    assert (served.runtime, served.requested) == (KERAS, OPENVINO_INT8)
    assert "no training images to quantise on" in (served.fallback_reason or "")
    assert not runtime_dir(model_dir(root, loaded), OPENVINO_INT8).exists()  # ... but no int8
