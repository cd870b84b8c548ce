"""/models against a real uvicorn server: list, show, manifest, alias switch (admin scope)."""

from __future__ import annotations

import base64

import pytest

from tests.support.images import png_bytes
from training.store import ModelStore

pytestmark = pytest.mark.integration


def test_list_and_show(client, live_server):
    listing = client.get("/models")
    assert listing.status_code == 200, listing.text
    families = {m["name"]: m for m in listing.json()["models"]}
    assert set(families) >= {"derm", "derm-baseline"}
    assert families["derm"]["versions"] == [1, 2]
    assert families["derm"]["latest"] == 2
    assert families["derm"]["aliases"]["production"] == 1
    assert set(families["derm"]["loaded_versions"]) >= {1, 2}  # latest and the task default

    shown = client.get("/models/derm")
    assert shown.status_code == 200
    versions = shown.json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["architecture"] == "attention"
    assert "production" in versions[0]["aliases"]


def test_manifest_by_alias_number_and_latest(client, live_server):
    store = ModelStore(live_server.store_dir)
    for selector, version in (("production", 1), ("2", 2), ("latest", 2)):
        response = client.get(f"/models/derm/{selector}")
        assert response.status_code == 200, response.text
        manifest = response.json()
        assert manifest["version"] == version
        assert manifest["weights_sha256"] == store.manifest("derm", str(version)).weights_sha256
        assert manifest["architecture"]["architecture"] == "attention"
        assert manifest["preprocess"]["input_size"] == 32
        assert manifest["training_spec"] == {"note": "untrained test model"}
        assert manifest["code_version"]
        assert "metrics" in manifest and manifest["loaded"] is True


@pytest.mark.parametrize(
    "path", ["/models/nosuch", "/models/derm/9", "/models/derm/nosuch", "/models/..%2f..%2fetc"]
)
def test_unknown_models_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert response.json()["detail"]


def _predict_version(client, ref: str) -> int:
    image = base64.b64encode(png_bytes(seed=9)).decode()
    response = client.post("/predict", json={"image_base64": image, "models": [ref]})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["version"]


def test_alias_switch_takes_effect_on_the_next_request(client, live_server):
    moved = client.put("/models/derm/aliases/canary", json={"version": 1})
    assert moved.status_code == 200, moved.text
    assert moved.json()["version"] == 1 and moved.json()["previous"] is None
    assert _predict_version(client, "derm:canary") == 1

    moved = client.put("/models/derm/aliases/canary", json={"version": 2})
    assert moved.status_code == 200, moved.text
    assert moved.json()["previous"] == 1
    assert _predict_version(client, "derm:canary") == 2
    assert ModelStore(live_server.store_dir).aliases("derm")["canary"] == 2
    assert client.get("/models/derm/canary").json()["version"] == 2


def test_alias_errors(client, live_server):
    assert client.put("/models/derm/aliases/canary", json={"version": 9}).status_code == 404
    assert client.put("/models/nosuch/aliases/canary", json={"version": 1}).status_code == 404
    # "latest" and numbers are selectors; "-x" and "x\n" (%0A) no store folder or alias name
    for alias in ("latest", "7", "-canary", "canary%0A"):
        response = client.put(f"/models/derm/aliases/{alias}", json={"version": 1})
        assert response.status_code == 422, alias
        assert "alias" in response.json()["detail"]
    assert "canary\n" not in ModelStore(live_server.store_dir).aliases("derm")
    assert client.put("/models/derm/aliases/canary", json={"version": "x"}).status_code == 422
    with live_server.client("predict-token") as weak:
        response = weak.put("/models/derm/aliases/canary", json={"version": 1})
        assert response.status_code == 403
        assert "admin" in response.json()["detail"]
