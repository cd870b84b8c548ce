"""/healthz, /readyz, /metrics and /docs on a real uvicorn server, and the app's life cycle."""

from __future__ import annotations

import base64

import pytest

from tests.support.images import png_bytes

pytestmark = pytest.mark.integration


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_serving_readiness_and_reports_the_job_backends(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200 and body["ready"] is True
    assert body["requires"] == ["models"]
    # the session server runs the embedded broker and a SQLite job database: both answer
    assert body["checks"] == {"models": True, "database": True, "broker": True}
    assert set(body["models"]["loaded"]) >= {"derm:1", "derm:2", "derm-baseline:1"}


def test_readyz_jobs_is_job_submission_health(client):
    response = client.get("/readyz/jobs")
    body = response.json()
    assert response.status_code == 200, body
    assert body["requires"] == ["database", "broker"]
    assert body["checks"] == {"models": True, "database": True, "broker": True}


def test_metrics_expose_latency_per_route_and_batch_sizes(client):
    image = base64.b64encode(png_bytes()).decode()
    assert client.post("/predict", json={"image_base64": image, "task": "derm"}).status_code == 200
    text = client.get("/metrics").text
    assert "# TYPE medrobust_http_request_duration_seconds histogram" in text
    assert 'medrobust_http_request_duration_seconds_count{method="POST",route="/predict"' in text
    assert "# TYPE medrobust_inference_batch_size histogram" in text
    assert 'medrobust_inference_batch_size_count{model="derm:1"}' in text
    assert 'medrobust_predictions_total{model="derm:1"}' in text
    assert "medrobust_models_loaded" in text


def test_unmatched_paths_share_one_metrics_label(client):
    assert client.get("/no/such/path/123").status_code == 404
    text = client.get("/metrics").text
    assert 'route="unmatched"' in text
    assert "/no/such/path" not in text


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    probes = ("/healthz", "/readyz", "/readyz/jobs")
    for path in ("/predict", "/explain", "/models", "/models/{name}", *probes):
        assert path in paths
    body = paths["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "image_base64" in body["application/json"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200
