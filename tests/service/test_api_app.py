"""The app in-process (TestClient): nothing loads at creation, models load once per lifespan."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings
from service.jobs.bounded import CachedChecks
from tests.support.api_server import build_store
from tests.support.images import png_bytes
from tests.support.scratch import scratch_dir


@pytest.fixture(scope="module")
def store_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    with scratch_dir(request, tmp_path_factory, "app") as root:
        yield build_store(root / "models")


class _DownJobs:
    def __init__(self) -> None:
        self.checks = CachedChecks(
            {"database": lambda: True, "broker": lambda: False}, timeout_s=5.0, cache_s=0.0
        )

    def stats(self) -> dict:
        return {"jobs": {"queued": 3, "running": 1}, "queues": {"training": 2}}

    def close(self) -> None:
        self.checks.close()


def test_models_load_once_per_lifespan_and_never_per_request(store_dir, tmp_path):
    settings = Settings(store_dir=store_dir, state_dir=tmp_path, preload_models=["derm-baseline"])
    app = create_app(settings)
    assert not hasattr(app.state, "models")  # creating the app loads nothing
    body = {"image_base64": base64.b64encode(png_bytes()).decode(), "models": ["derm-baseline"]}
    with TestClient(app) as client:
        registry = app.state.models
        (before,) = [id(m.loaded.model) for m in registry._served.values()]
        for _ in range(3):
            assert client.post("/predict", json=body).status_code == 200
        assert [id(m.loaded.model) for m in registry._served.values()] == [before]
        assert [m.ref for m in registry.loaded()] == ["derm-baseline:1"]

        real_jobs, app.state.jobs = app.state.jobs, _DownJobs()
        try:
            serving, jobs = client.get("/readyz"), client.get("/readyz/jobs")
            assert (serving.status_code, jobs.status_code) == (200, 503)
            for response in (serving, jobs):
                checks = response.json()["checks"]
                assert checks == {"models": True, "database": True, "broker": False}
            metrics = client.get("/metrics").text
            assert 'medrobust_jobs{state="queued"} 3.0' in metrics
            assert 'medrobust_queue_depth{queue="training"} 2.0' in metrics
        finally:
            app.state.jobs = real_jobs
    assert registry.loaded() == []  # shutdown releases the models


def test_a_configured_preload_that_fails_stops_the_start(store_dir, tmp_path):
    app = create_app(Settings(store_dir=store_dir, state_dir=tmp_path, preload_models=["nosuch"]))
    with pytest.raises(RuntimeError, match="nosuch"), TestClient(app):
        pass


def test_auth_off_when_no_tokens(store_dir, tmp_path):
    app = create_app(Settings(store_dir=store_dir, state_dir=tmp_path, preload_models=["derm:1"]))
    with TestClient(app) as client:
        assert client.get("/models").status_code == 200
        assert client.get("/models/derm/1").json()["loaded"] is True
