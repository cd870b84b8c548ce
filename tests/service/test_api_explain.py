"""POST /explain against a real uvicorn server: JSON overlays, PNG panels, attacks, bad params."""

from __future__ import annotations

import base64
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.support.images import png_bytes
from training.explain.panel import PNG_KEY

pytestmark = pytest.mark.integration

IMAGE = base64.b64encode(png_bytes(seed=5)).decode()


def _decode_png(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _panel_titles(data: bytes) -> list[list[str]]:
    """Each tile's title lines, from the panel's iTXt chunk (training/explain/panel.py)."""
    with Image.open(io.BytesIO(data)) as image:
        return [tile["title"] for tile in json.loads(image.text[PNG_KEY])["tiles"]]


def test_json_overlays_decode_as_png(client):
    response = client.post(
        "/explain",
        json={"image_base64": IMAGE, "models": ["derm", "derm-baseline"], "method": "gradcam++"},
    )
    assert response.status_code == 200, response.text
    attention, baseline = response.json()["explanations"]
    assert (attention["model"], attention["version"]) == ("derm", 2)
    assert attention["weights_sha256"] == attention["prediction"]["weights_sha256"]
    assert set(attention["overlays"]) == {"gradcam++", "attention"}
    assert set(baseline["overlays"]) == {"gradcam++"}  # no attention maps without attention
    for explanation in (attention, baseline):
        assert explanation["method"] == "gradcam++"
        assert explanation["class_explained"] == explanation["prediction"]["top_class"]
        assert explanation["adversarial_prediction"] is None
        for overlay in explanation["overlays"].values():
            assert _decode_png(base64.b64decode(overlay)).shape == (32, 32, 3)


def test_attack_explains_the_adversarial_image_next_to_the_clean_one(client):
    response = client.post(
        "/explain",
        json={
            "image_base64": IMAGE,
            "models": ["derm:production"],
            "class": "malignant",
            "attack": "pgd",
            "epsilon": 4,
            "steps": 2,
        },
    )
    assert response.status_code == 200, response.text
    (explanation,) = response.json()["explanations"]
    assert explanation["version"] == 1
    assert explanation["class_explained"] == "malignant"
    assert set(explanation["overlays"]) == {
        "gradcam",
        "attention",
        "adversarial_image",
        "gradcam_adversarial",
        "attention_adversarial",
    }
    assert explanation["attack"]["name"] == "pgd"
    assert explanation["attack"]["epsilon"] == 4.0 and explanation["attack"]["steps"] == 2
    assert explanation["adversarial_prediction"]["model"] == "derm"
    assert set(explanation["comparison"]) >= {"pearson", "top_iou", "shift_px"}


def test_png_panel_by_query_and_by_accept_header(client):
    files = {"image": ("x.png", png_bytes(seed=5), "image/png")}
    by_query = client.post(
        "/explain?format=png", files=files, data={"models": "derm", "class": "1"}
    )
    assert by_query.status_code == 200, by_query.text
    assert by_query.headers["content-type"] == "image/png"
    assert by_query.headers["x-model"] == "derm"
    assert by_query.headers["x-model-version"] == "2"
    assert len(by_query.headers["x-weights-sha256"]) == 64
    assert by_query.headers["x-class-explained"] == "malignant"
    panel = _decode_png(by_query.content)  # gradcam | attention, titled, at ≥ 512 px a tile
    titles = _panel_titles(by_query.content)
    assert [title[0] for title in titles] == ["clean", "clean"]
    assert titles[1][1] == "attention | derm v2"
    assert titles[1][2].startswith("p(malignant) = ")
    assert panel.shape[0] > 512 and panel.shape[1] > 2 * 512
    by_accept = client.post(
        "/explain", files=files, data={"task": "baseline"}, headers={"Accept": "image/png"}
    )
    assert by_accept.status_code == 200, by_accept.text
    assert by_accept.headers["x-model"] == "derm-baseline"
    assert [title[1] for title in _panel_titles(by_accept.content)] == [
        "gradcam | derm-baseline v1"
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"attack": "pgd"}, "epsilon is required"),
        ({"attack": "fgsm", "epsilon": 2, "steps": 3}, "unknown parameter"),
        ({"attack": "pgd", "epsilon": -1}, "epsilon must be a finite number"),
        ({"attack": "nosuch", "epsilon": 2}, "unknown attack"),
        ({"epsilon": 2}, "need an 'attack'"),
        ({"class": "melanoma"}, "no class"),
        ({"class": 7}, "no class index 7"),
        ({"method": "lime"}, "gradcam"),
        ({"attack": "pgd", "epsilon": 2, "steps": 10_000}, "less than or equal to 100"),
    ],
)
def test_bad_explain_parameters_are_422_with_a_message(client, params, message):
    response = client.post(
        "/explain", json={"image_base64": IMAGE, "models": ["derm-baseline"], **params}
    )
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


def test_png_panel_needs_exactly_one_model(client):
    response = client.post(
        "/explain?format=png", json={"image_base64": IMAGE, "models": ["derm", "derm-baseline"]}
    )
    assert response.status_code == 422
    assert "one model" in response.json()["detail"]
