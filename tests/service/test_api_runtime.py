"""/predict through the configured serving runtime (MEDROBUST_SERVE_RUNTIME, training/runtimes/):
the app in-process with its lifespan (TestClient), a real HAM10000 image, the tiny HAM10000 CNN.

A model with a readable validation split is served by OpenVINO once it passes its gate; a model
stored without a training spec has no calibration images, so it falls back to Keras fp32; either
way every answer names the runtime that computed its probabilities.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings
from tests.support.runtime_models import model_dir, store_ham_model
from tests.support.scratch import scratch_dir
from training.data import load_ham10000
from training.predict import predict_images
from training.preprocess import read_image
from training.runtimes import OPENVINO, OPENVINO_BF16, read_record, runtime_dir
from training.runtimes.openvino_bf16 import bf16_units
from training.store import ModelStore

if TYPE_CHECKING:  # imports Keras: the tiny_ham fixture pays for it only where it is used
    from tests.support.tiny_models import HamCase

# OpenVINO and TensorFlow both compute in float32 but sum in different orders: over dot products
# of ~10^3 terms each logit may move by ~10^3 · 2^-24 ≈ 6e-5 relative, far below this bound.
PROBABILITY_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def store_root(
    request: pytest.FixtureRequest, tiny_ham: HamCase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    with scratch_dir(request, tmp_path_factory, "runtime") as scratch:
        root = scratch / "models"
        store_ham_model(tiny_ham.model, root, "ham")
        store_ham_model(tiny_ham.model, root, "ham-nospec", with_spec=False)
        yield root


@pytest.fixture(scope="module")
def ham_jpeg(data_dir):
    ham = load_ham10000(data_dir / "ham10000_200x150")
    path = ham.paths[int(np.flatnonzero(ham.source_split == "test")[0])]
    return path


def _predict(client: TestClient, path: str, models: list[str]) -> list[dict]:
    with open(path, "rb") as handle:
        body = {"image_base64": base64.b64encode(handle.read()).decode(), "models": models}
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_predict_answers_name_the_runtime(store_root, ham_jpeg, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(data_dir))  # where the spec's dataset lies
    settings = Settings(
        store_dir=store_root,
        state_dir=tmp_path,
        serve_runtime=OPENVINO,
        preload_models=["ham", "ham-nospec"],
    )
    with TestClient(create_app(settings)) as client:
        served, fallback = _predict(client, ham_jpeg, ["ham", "ham-nospec"])

    loaded = ModelStore(store_root).load("ham")
    record = read_record(runtime_dir(model_dir(store_root, loaded), OPENVINO))
    assert record is not None and record.parity is not None and record.parity.passed
    assert served["runtime"] == OPENVINO
    assert served["runtime_artefact_sha256"] == record.artefact_sha256
    assert served["weights_sha256"] == loaded.manifest.weights_sha256

    (expected,) = predict_images(loaded, [read_image(ham_jpeg)])
    assert served["top_class"] == expected.top_class
    for name, p in expected.probabilities.items():
        assert served["probabilities"][name] == pytest.approx(p, abs=PROBABILITY_TOLERANCE)

    assert (fallback["runtime"], fallback["runtime_artefact_sha256"]) == ("keras", None)


def test_the_default_runtime_is_openvino_bf16_and_a_model_it_cannot_gate_is_served_by_keras(
    store_root, ham_jpeg, data_dir, tmp_path, monkeypatch
):
    """The default is the fastest runtime that passed the gate in bench/serve_runtimes.py: bf16
    behind its guard where the CPU has bf16 units, the f32 IR where it has not; a model with no
    training spec has no validation split to gate on, so Keras serves it."""
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(data_dir))
    settings = Settings(store_dir=store_root, state_dir=tmp_path, preload_models=["ham-nospec"])
    assert settings.serve_runtime == OPENVINO_BF16
    with TestClient(create_app(settings)) as client:
        served, fallback = _predict(client, ham_jpeg, ["ham", "ham-nospec"])
    assert (fallback["runtime"], fallback["runtime_artefact_sha256"]) == ("keras", None)
    assert fallback["runtime_requested"] == OPENVINO_BF16

    loaded = ModelStore(store_root).load("ham")
    bf16 = read_record(runtime_dir(model_dir(store_root, loaded), OPENVINO_BF16))
    if bf16_units():
        assert bf16 is not None and bf16.parity is not None and bf16.guard is not None
        assert served["runtime"] == (OPENVINO_BF16 if bf16.parity.passed else OPENVINO)
    else:
        assert (served["runtime"], served["runtime_requested"]) == (OPENVINO, OPENVINO_BF16)
    (expected,) = predict_images(loaded, [read_image(ham_jpeg)])
    assert served["top_class"] == expected.top_class


def test_an_unknown_runtime_is_a_settings_error(tmp_path):
    with pytest.raises(ValueError, match="serve_runtime"):
        Settings(store_dir=tmp_path, state_dir=tmp_path, serve_runtime="tensorrt")
