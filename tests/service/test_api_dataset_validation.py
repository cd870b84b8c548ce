"""MedMNIST files as published, class names in answers, and the dataset checked at submission.

A model is stored with the class names the adapter gives a MedMNIST-layout file with 1-D
``(N,)`` labels (as BreastMNIST ships them) and a spec naming its classes, and (marked slow:
minutes on a busy CPU) one is trained through the real path (``train_and_store``: adapter,
pipeline, fit, store) on that file; the API (in-process TestClient over a real JobRuntime:
SQLite job database and the embedded broker, the ``make run`` setup, as test_api_jobs.py) must
then answer ``/predict`` and ``/models`` with those names. Job submissions naming a bad file
must be 422s with the reason, before any job exists; no worker runs, so an accepted job stays
queued.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.support.app_settings import local_settings
from tests.support.images import png_bytes
from tests.support.jobs_stack import AUTH, TOKEN
from tests.support.scratch import scratch_dir
from training.config import TrainConfig, TrainingSpec
from training.data.registry import DatasetSpec, load_dataset
from training.models import ArchitectureConfig, build_from_config
from training.preprocess import PreprocessConfig
from training.store import ModelStore
from training.workflow import train_and_store

pytestmark = pytest.mark.integration

NAMES = ["benign", "malignant"]
SIZES = {"train": 8, "val": 4, "test": 4}


def _write(path: Path, labels: dict[str, np.ndarray] | None = None, drop: str = "") -> Path:
    """A MedMNIST-layout file of 12×12 RGB images (class 1 brighter), labels ``(N,)``
    alternating 0/1 unless ``labels`` gives them; ``drop`` leaves one array out."""
    rng = np.random.default_rng(3)
    arrays = {}
    for split, n in SIZES.items():
        y = labels[split] if labels else np.arange(n, dtype=np.uint8) % 2
        level = 60 + 120 * (np.asarray(y).reshape(n, -1)[:, 0] % 2)
        noise = rng.integers(0, 40, (n, 12, 12, 3))
        arrays[f"{split}_images"] = (level[:, None, None, None] + noise).astype(np.uint8)
        arrays[f"{split}_labels"] = y
    arrays.pop(drop, None)
    np.savez_compressed(path, **arrays)
    return path


def _labels(make) -> dict[str, np.ndarray]:
    return {split: make(n) for split, n in SIZES.items()}


def _forged(source: Path, target: Path) -> Path:
    """``source`` with train_images' header claiming 10⁶ images of 10⁴×10⁴×3 (300 TB), over
    the few bytes the archive holds: refused from the header, nothing allocated."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "train_images.npy":
                header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.uint8))
                forged = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    forged, {**header, "shape": (10**6, 10**4, 10**4, 3)}
                )
                data = forged.getvalue() + data[len(forged.getvalue()) :]
            out.writestr(info.filename, data)
    return target


@pytest.fixture(scope="module")
def root(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    with scratch_dir(request, tmp_path_factory, "dataset-validation") as scratch:
        root = scratch.resolve()
        data = root / "data"
        data.mkdir()
        good = _write(data / "breast.npz")
        _write(data / "column.npz", _labels(lambda n: (np.arange(n) % 2).astype(np.uint8)[:, None]))
        _write(data / "cube.npz", _labels(lambda n: np.zeros((n, 1, 1), np.uint8)))
        _write(data / "three.npz", _labels(lambda n: (np.arange(n) % 3).astype(np.uint8)))
        _write(data / "multi.npz", _labels(lambda n: np.eye(n, 4, dtype=np.uint8)))
        _write(data / "floats.npz", _labels(lambda n: np.zeros(n, np.float32)))
        _write(data / "no_val_labels.npz", drop="val_labels")
        _forged(good, data / "forged.npz")
        (data / "notes.npz").write_text("a text file named .npz")
        # an untrained model stored with the names the adapter gives (seconds, not a training run)
        names = load_dataset(_spec("breast", good).dataset).class_names
        config = ArchitectureConfig(architecture="baseline", num_classes=len(names), input_size=32)
        keras.utils.set_random_seed(0)
        ModelStore(root / "models").save(
            build_from_config(config),
            "breast",
            config,
            PreprocessConfig(input_size=32),
            list(names),
        )
        yield root


def _spec(name: str, path: Path) -> TrainingSpec:
    return TrainingSpec(
        name=name,
        dataset=DatasetSpec(kind="medmnist", path=str(path), class_names=NAMES, split="source"),
        preprocess=PreprocessConfig(input_size=32),
        train=TrainConfig(epochs=1, batch_size=4, learning_rate=1e-3),
    )


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    settings = local_settings(root, api_tokens={TOKEN: ["predict", "jobs"]})
    with TestClient(create_app(settings), headers=AUTH) as http:
        yield http


def _training(name: str, path: str, **dataset: object) -> dict:
    return {
        "name": name,
        "dataset": {"kind": "medmnist", "path": path, **dataset},
        "preprocess": {"input_size": 32},
        "train": {"epochs": 1, "batch_size": 4},
    }


def _predict(client: TestClient, model: str) -> dict:
    image = base64.b64encode(png_bytes(12, 12, seed=1)).decode()
    response = client.post("/predict", json={"image_base64": image, "models": [model]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    return prediction


def test_a_model_stored_with_spec_class_names_answers_with_them(client, root):
    manifest = ModelStore(root / "models").manifest("breast", "latest")
    assert manifest.class_names == NAMES

    prediction = _predict(client, "breast")

    assert list(prediction["probabilities"]) == NAMES
    assert prediction["top_class"] in NAMES
    assert (prediction["model"], prediction["weights_sha256"]) == (
        "breast",
        manifest.weights_sha256,
    )
    (version,) = client.get("/models/breast").json()["versions"]
    assert version["class_names"] == NAMES


@pytest.mark.slow
def test_a_model_trained_on_named_1d_labels_answers_with_the_names(client, root):
    """The real path: adapter ((N,) labels), pipeline, one epoch of the 32-px ResNet-50, store."""
    spec = _spec("breast-trained", root / "data" / "breast.npz")
    manifest = train_and_store(spec, ModelStore(root / "models"), root / "checkpoint")
    assert manifest.class_names == NAMES

    prediction = _predict(client, "breast-trained")

    assert list(prediction["probabilities"]) == NAMES
    assert prediction["weights_sha256"] == manifest.weights_sha256


@pytest.mark.parametrize(
    ("path", "dataset"),
    [
        ("breast.npz", {"class_names": ["benign", "malignant"]}),  # labels (N,)
        ("column.npz", {}),  # labels (N, 1)
        ("multi.npz", {"label_column": 3, "class_names": ["absent", "present"]}),
    ],
)
def test_published_label_shapes_are_accepted(client, path, dataset):
    response = client.post("/jobs/training", json=_training("ok", path, **dataset))

    assert response.status_code == 202, response.text
    assert response.json()["state"] == "queued"


@pytest.mark.parametrize(
    ("path", "dataset", "said"),
    [
        ("cube.npz", {}, "train_labels is uint8 (8, 1, 1); expected integers (8,) or (8, K)"),
        ("floats.npz", {}, "train_labels is float32 (8,); expected integers"),
        ("three.npz", {"class_names": NAMES}, "label 2 at row 2 is not in 0..1"),
        ("breast.npz", {"class_names": ["a", "b", "c"], "task": "pneumonia"}, "lists 3 names"),
        ("multi.npz", {}, "has 4 columns: a multi-label file"),
        ("no_val_labels.npz", {}, "missing key(s) ['val_labels']"),
        ("forged.npz", {}, "train_images declares uint8 (1000000, 10000, 10000, 3)"),
        ("notes.npz", {}, "not an .npz archive"),
    ],
)
def test_a_bad_dataset_is_422_at_submission_and_no_job_is_made(client, path, dataset, said):
    before = client.get("/jobs", params={"limit": 500}).json()["total"]

    response = client.post("/jobs/training", json=_training("bad", path, **dataset))

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert said in detail
    assert detail.startswith("dataset: <data>/" + path)  # the server's path is not shown
    assert client.get("/jobs", params={"limit": 500}).json()["total"] == before


def test_path_confinement_still_comes_first(client, root):
    outside = root / "models"  # exists, but outside the data root
    response = client.post("/jobs/training", json=_training("bad", str(outside)))

    assert response.status_code == 422, response.text
    assert "inside the data root" in response.json()["detail"]


def test_an_evaluation_checks_its_dataset_and_the_models_class_count(client):
    def evaluation(path: str, **dataset: object) -> dict:
        return {
            "models": ["breast"],
            "dataset": {"kind": "medmnist", "path": path, "split": "source", **dataset},
            "evaluation": {"attacks": [{"name": "fgsm", "params": {}}], "epsilons": [1]},
        }

    bad_file = client.post("/jobs/evaluation", json=evaluation("cube.npz"))
    assert bad_file.status_code == 422 and "expected integers" in bad_file.json()["detail"]
    three = client.post("/jobs/evaluation", json=evaluation("three.npz"))
    assert three.status_code == 422, three.text
    assert "breast:1 has 2 classes but the dataset has 3 (0, 1, 2)" in three.json()["detail"]
    good = client.post("/jobs/evaluation", json=evaluation("breast.npz", class_names=NAMES))
    assert good.status_code == 202, good.text
