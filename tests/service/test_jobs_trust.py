"""Evaluation jobs with a trust section, end to end: a real uvicorn API, a real Celery worker,
real Redis (db 15).

An untrained 32-px baseline (plumbing, not findings) is evaluated with ``trust``: the worker
writes the section beside the report and ``GET /jobs/{id}/trust`` (+ ``.md``, PNGs) serves it.
Requests over the ``trust_*`` limits get 422 at submission; certifying a model trained without
noise and no ``noise_sigma`` fails the job with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.images import make_folder_dataset
from tests.support.jobs_stack import REDIS_URL, Stack, running_stack
from tests.support.scratch import scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with scratch_dir(request, tmp_path_factory, "jobs-trust") as root:
        make_folder_dataset(root / "data" / "tiny")
        with running_stack(root, REDIS_URL) as stack:
            yield stack


@pytest.fixture(scope="module")
def model(stack: Stack) -> str:
    """An untrained 32-px baseline (no train.noise_sigma) in the stack's store."""
    import keras

    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(0)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    manifest = ModelStore(stack.root / "models").save(
        build_from_config(config), "trust-baseline", config, PreprocessConfig(input_size=32),
        ["bright", "dark"],
    )  # fmt: skip
    return manifest.ref


def evaluation(stack: Stack, model: str, trust: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "models": [model],
        "dataset": {"kind": "folders", "path": str(stack.root / "data" / "tiny")},
        "evaluation": {"attacks": [{"name": "fgsm"}], "epsilons": [0, 8], "batch_size": 2},
        "split": "test",
    }
    if trust is not None:
        body["trust"] = trust
    return body


def test_an_evaluation_writes_and_serves_its_trust_section(stack: Stack, model: str) -> None:
    trust = {"certify": True, "flip": True, "limit": 4, "n": 64, "n0": 8, "steps": 2}
    body = evaluation(stack, model, {**trust, "noise_sigma": 16})
    with stack.client() as client:
        response = client.post("/jobs/evaluation", json=body)
        assert response.status_code == 202, response.text
        job = stack.wait_job(response.json()["job_id"], timeout_s=600)
        assert job["state"] == "succeeded", f"{job}\n{stack.logs()}"
        job_id = job["id"]
        section = client.get(f"/jobs/{job_id}/trust")
        markdown = client.get(f"/jobs/{job_id}/trust.md")
        pngs = [client.get(f"/jobs/{job_id}/trust/{kind}.png") for kind in ("certified", "flip")]
        report = client.get(f"/jobs/{job_id}/report")

    assert job["result"]["trust"] == f"/jobs/{job_id}/trust"
    assert report.status_code == 200  # the robustness report is still there
    assert section.status_code == 200 and section.headers["content-type"] == "application/json"
    section = section.json()
    assert (section["schema_version"], section["n_images"]) == (1, 4)
    (entry,) = section["models"]
    assert entry["ref"] == model
    certified = entry["certified"]
    assert (certified["sigma"], certified["n_images"]) == (16, 4)
    assert len(certified["certified_accuracy"]) == len(certified["radii"])
    assert "trained without Gaussian noise" in entry["sigma_warning"]
    assert entry["flip"] is not None
    assert markdown.status_code == 200 and model in markdown.text
    for png in pngs:
        assert png.status_code == 200 and png.content.startswith(PNG)


@pytest.mark.parametrize(
    ("trust", "message"),
    [
        ({"certify": True, "n": 10**9, "noise_sigma": 8}, "trust.n 1000000000 is over"),
        ({"certify": True, "n0": 10**6, "noise_sigma": 8}, "trust_max_n0"),
        ({"flip": True, "steps": 10**4}, "trust_max_steps"),
        ({"flip": True, "restarts": 100}, "trust_max_restarts"),
        ({}, "trust asks for nothing"),
        ({"flip": True, "limit": 0}, "limit"),
        ({"flip": True, "budget": 3}, "Extra inputs"),
    ],
)
def test_trust_over_the_limits_is_refused_at_submission(
    stack: Stack, model: str, trust: dict[str, Any], message: str
) -> None:
    with stack.client() as client:
        response = client.post("/jobs/evaluation", json=evaluation(stack, model, trust))
    assert response.status_code == 422, response.text
    assert message in response.text


def test_certifying_a_noise_free_model_without_sigma_fails_the_job(
    stack: Stack, model: str
) -> None:
    body = evaluation(stack, model, {"certify": True, "limit": 2, "n": 16, "n0": 4})
    with stack.client() as client:
        response = client.post("/jobs/evaluation", json=body)
        assert response.status_code == 202, response.text
        job = stack.wait_job(response.json()["job_id"], timeout_s=600)
        trust = client.get(f"/jobs/{job['id']}/trust")
    assert job["state"] == "failed" and "trained without Gaussian noise" in job["error"], job
    assert trust.status_code == 409


def test_an_evaluation_without_trust_has_no_trust_section(stack: Stack, model: str) -> None:
    with stack.client() as client:
        response = client.post("/jobs/evaluation", json=evaluation(stack, model, None))
        job = stack.wait_job(response.json()["job_id"], timeout_s=600)
        trust = client.get(f"/jobs/{job['id']}/trust")
    assert job["state"] == "succeeded", job
    assert trust.status_code == 404 and "no trust section" in trust.text
