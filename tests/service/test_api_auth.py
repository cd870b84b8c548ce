"""Bearer tokens and scopes, against a real uvicorn server."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.support.images import png_bytes

pytestmark = pytest.mark.integration

BODY = {"image_base64": base64.b64encode(png_bytes()).decode(), "models": ["derm-baseline"]}


def test_missing_and_invalid_tokens_are_401(live_server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = httpx.post(f"{live_server.url}/predict", json=BODY, headers=headers, timeout=60)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"]
    assert httpx.get(f"{live_server.url}/models", timeout=30).status_code == 401


def test_scopes(live_server):
    with live_server.client("predict-token") as predictor:
        assert predictor.post("/predict", json=BODY).status_code == 200
        forbidden = predictor.post("/explain", json=BODY)
        assert forbidden.status_code == 403
        assert "explain" in forbidden.json()["detail"]
        assert predictor.get("/models").status_code == 200  # any valid token reads models
    with live_server.client("admin-token") as admin:
        assert admin.post("/predict", json=BODY).status_code == 403  # admin implies nothing else


def test_health_routes_are_open(live_server):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        response = httpx.get(f"{live_server.url}{path}", timeout=30)
        assert response.status_code in (200, 503), (path, response.text)
        assert response.status_code != 401
