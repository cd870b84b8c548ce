"""POST /predict against a real uvicorn server: multipart, base64 JSON, several models, tasks."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.support.api_server import CLASSES
from tests.support.dicom_factory import dicom_bytes
from tests.support.images import jpeg_bytes, png_bytes
from training.store import ModelStore

pytestmark = pytest.mark.integration


def _manifest(live_server, ref: str):
    name, _, selector = ref.partition(":")
    return ModelStore(live_server.store_dir).manifest(name, selector or "latest")


def _check(prediction: dict, live_server, ref: str) -> None:
    manifest = _manifest(live_server, ref)
    assert prediction["ref"] == ref
    assert prediction["model"] == manifest.name
    assert prediction["version"] == manifest.version
    assert prediction["weights_sha256"] == manifest.weights_sha256
    assert prediction["architecture"] == manifest.architecture.architecture
    probabilities = prediction["probabilities"]
    assert list(probabilities) == CLASSES
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction["top_class"] == max(probabilities, key=probabilities.get)
    assert prediction["top_probability"] == pytest.approx(max(probabilities.values()))


def test_multipart_upload_one_model(client, live_server):
    response = client.post(
        "/predict",
        files={"image": ("lesion.png", png_bytes(), "image/png")},
        data={"models": "derm-baseline"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {
        "format": "png",
        "width": 48,
        "height": 40,
        "frames": 1,
        "dicom": None,
    }
    (prediction,) = body["predictions"]
    _check(prediction, live_server, "derm-baseline")


def test_json_base64_several_models_side_by_side(client, live_server):
    refs = ["derm:production", "derm", "derm-baseline:1"]
    image = base64.b64encode(jpeg_bytes()).decode()
    response = client.post("/predict", json={"image_base64": image, "models": refs})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["ref"] for p in predictions] == refs
    for prediction, ref in zip(predictions, refs, strict=True):
        _check(prediction, live_server, ref)
    assert [p["version"] for p in predictions] == [1, 2, 1]  # alias, latest, number
    assert {p["architecture"] for p in predictions} == {"attention", "baseline"}


def test_multipart_repeated_and_comma_separated_models(client, live_server):
    response = client.post(
        "/predict",
        files={"image": ("x.png", png_bytes(), "image/png")},
        data={"models": ["derm:1,derm:2", "derm-baseline"]},
    )
    assert response.status_code == 200, response.text
    assert [p["ref"] for p in response.json()["predictions"]] == [
        "derm:1",
        "derm:2",
        "derm-baseline",
    ]


def test_task_uses_the_configured_default_model(client, live_server):
    image = base64.b64encode(png_bytes(seed=3)).decode()
    response = client.post("/predict", json={"image_base64": image, "task": "derm"})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    _check(prediction, live_server, "derm:production")
    unknown = client.post("/predict", json={"image_base64": image, "task": "retina"})
    assert unknown.status_code == 404
    assert "retina" in unknown.json()["detail"] and "derm" in unknown.json()["detail"]
    neither = client.post("/predict", json={"image_base64": image})
    assert neither.status_code == 422
    assert "models" in neither.json()["detail"]


def test_grayscale_and_16_bit_png(client):
    gray = png_bytes(channels=1)
    assert (
        client.post(
            "/predict", files={"image": ("g.png", gray)}, data={"models": "derm"}
        ).status_code
        == 200
    )
    import cv2

    deep = cv2.imencode(".png", np.full((20, 20), 40000, np.uint16))[1].tobytes()
    response = client.post("/predict", files={"image": ("d.png", deep)}, data={"models": "derm"})
    assert response.status_code == 200, response.text


def test_dicom_upload(client):
    pytest.importorskip("pydicom")
    data, _ = dicom_bytes(photometric="MONOCHROME1")
    response = client.post(
        "/predict", files={"image": ("ct.dcm", data, "application/dicom")}, data={"task": "derm"}
    )
    assert response.status_code == 200, response.text
    image = response.json()["image"]
    assert {k: image[k] for k in ("format", "width", "height", "frames")} == {
        "format": "dicom",
        "width": 20,
        "height": 24,
        "frames": 1,
    }
    assert image["dicom"]["modality"] == "OT"
