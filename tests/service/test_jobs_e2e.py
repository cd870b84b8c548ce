"""End to end: a real uvicorn API, a real Celery worker, real Redis (db 15), a real SQLite file.

One stack per module. An attention model is trained through the API while its progress is
watched, and the worker's pool process is SIGKILLed mid-training: the task is redelivered and
resumes from its checkpoint. The trained model is then used through the API (predict, explain)
and compared with a baseline (an untrained one, stored here to save a second training) by a
two-shard robustness evaluation whose report is fetched as JSON and PNG. A clean training run
without a kill is in test_jobs_embedded.py.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import make_folder_dataset, png_bytes
from tests.support.jobs_stack import (
    REDIS_URL,
    TERMINAL,
    Stack,
    pool_pid,
    running_stack,
    training_spec,
)
from tests.support.scratch import scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with scratch_dir(request, tmp_path_factory, "jobs-e2e") as root:
        make_folder_dataset(root / "data" / "tiny")
        with running_stack(root, REDIS_URL) as stack:
            yield stack


@pytest.fixture(scope="module")
def data(stack: Stack) -> Path:
    return stack.root / "data" / "tiny"


def test_jobs_survive_an_api_restart(stack: Stack, data: Path) -> None:
    """Runs first, while the store is empty, so the API restarts without loading models."""
    with stack.client() as client:
        queued = client.post("/jobs/training", json=training_spec("restart", data)).json()
        client.post(f"/jobs/{queued['job_id']}/cancel")
        before = client.get("/jobs", params={"limit": 500}).json()
    stack.restart_api()
    with stack.client() as client:
        after = client.get("/jobs", params={"limit": 500}).json()
        ready = client.get("/readyz").json()
    assert after["total"] == before["total"] >= 1
    assert {j["id"]: j["state"] for j in after["jobs"]} == {
        j["id"]: j["state"] for j in before["jobs"]
    }
    assert ready["checks"]["database"] and ready["checks"]["broker"]


@pytest.fixture(scope="module")
def baseline_model(stack: Stack) -> str:
    """An untrained 32-px baseline in the stack's store, to compare the trained model with."""
    import keras

    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(0)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    manifest = ModelStore(stack.root / "models").save(
        build_from_config(config),
        "e2e-baseline",
        config,
        PreprocessConfig(input_size=32),
        ["bright", "dark"],
    )
    return manifest.ref


@pytest.fixture(scope="module")
def killed_job(stack: Stack, data: Path) -> dict[str, Any]:
    """An attention model (2 epochs) whose pool process is SIGKILLed during epoch 2."""
    spec = training_spec("e2e-attention", data, model={"architecture": "attention"})
    spec["train"]["epochs"] = 2
    with stack.client() as client:
        response = client.post("/jobs/training", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    # epoch 2 has begun, so epoch 1's checkpoint is on disk
    seen: list[dict[str, Any]] = []
    running = stack.wait_job(
        job_id,
        seen=seen,
        until=lambda j: (
            j["state"] in TERMINAL or (j["state"] == "running" and (j["epoch"] or 0) >= 2)
        ),
        timeout_s=400,
    )
    assert running["state"] == "running", running
    victim = pool_pid(running)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    final = stack.wait_job(job_id, seen=seen, timeout_s=400)
    return {
        "before": running,
        "victim": victim,
        "seen": seen,
        "job": final,
        "recovery_s": time.monotonic() - killed_at,
    }


def test_sigkill_of_the_pool_process_redelivers_and_resumes(
    stack: Stack, killed_job: dict[str, Any]
) -> None:
    job, seen = killed_job["job"], killed_job["seen"]
    # never stuck: it reached a terminal state within the bounded wait, and here it succeeded
    assert job["state"] == "succeeded", f"{job}\n{stack.logs()}"
    assert job["attempts"] == 2, job
    assert job["worker"] != killed_job["before"]["worker"]  # another pool process finished it
    assert job["error"] is None and job["progress"] == 100.0
    # progress was visible while it ran (epoch, batch, percent), before and after the kill
    first = [j for j in seen if j["attempts"] == 1 and j["state"] == "running" and j["batch"]]
    assert first and all(j["epochs"] == 2 and j["batches"] == 4 for j in first)
    assert all(0 <= j["progress"] <= 100 for j in seen)
    # the second attempt resumed from the checkpoint: it never reported epoch 1 again
    second = [j for j in seen if j["attempts"] == 2 and j["state"] == "running" and j["epoch"]]
    assert second and min(j["epoch"] for j in second) >= 2, [(j["epoch"], j["batch"]) for j in seen]
    assert job["result"]["epochs_run"] == 2
    assert [h["epoch"] for h in job["metrics"]["history"]] == [1, 2]
    assert {"loss", "val_loss"} <= set(job["metrics"]["history"][0])
    # the result names the stored model and its hash, and the artifact is there
    result = job["result"]
    assert result["model"] == "e2e-attention:1"
    assert result["location"] == f"<store>/{result['name']}/{result['version']}"  # no server path
    manifest = stack.root / "models" / result["name"] / str(result["version"]) / "manifest.json"
    assert manifest.is_file() and result["weights_sha256"] in manifest.read_text()
    assert "WorkerLostError" in stack.worker_log.read_text() or "SIGKILL" in (
        stack.worker_log.read_text()
    )


def test_predict_and_explain_with_the_trained_model(
    stack: Stack, baseline_model: str, killed_job: dict[str, Any]
) -> None:
    refs = [baseline_model, killed_job["job"]["result"]["model"]]
    image = base64.b64encode(png_bytes(seed=3)).decode()
    with stack.client() as client:
        predicted = client.post("/predict", json={"models": refs, "image_base64": image})
        assert predicted.status_code == 200, predicted.text
        predictions = predicted.json()["predictions"]
        assert [p["model"] for p in predictions] == ["e2e-baseline", "e2e-attention"]
        assert [p["architecture"] for p in predictions] == ["baseline", "attention"]
        sha = {p["model"]: p["weights_sha256"] for p in predictions}
        assert sha["e2e-attention"] == killed_job["job"]["result"]["weights_sha256"]
        explained = client.post("/explain", json={"models": refs[1:], "image_base64": image})
        assert explained.status_code == 200, explained.text
        explanations = explained.json()["explanations"]
        assert [e["model"] for e in explanations] == ["e2e-attention"]
        assert "attention" in explanations[0]["overlays"]


def test_two_shard_evaluation_of_both_models(
    stack: Stack, data: Path, baseline_model: str, killed_job: dict[str, Any]
) -> None:
    refs = ["e2e-baseline", "e2e-attention:latest"]
    body = {
        "models": refs,
        "dataset": {"kind": "folders", "path": str(data)},
        "evaluation": {"attacks": [{"name": "fgsm"}], "epsilons": [0, 8], "batch_size": 2},
        "split": "test",
        "shards": 2,
    }
    with stack.client() as client:
        response = client.post("/jobs/evaluation", json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        pending = client.get(f"/jobs/{job_id}/report")
        assert pending.status_code in (200, 409)  # 409 until it has succeeded
        job = stack.wait_job(job_id, timeout_s=300)
        assert job["state"] == "succeeded", f"{job}\n{stack.logs()}"
        # refs were pinned to versions at submission; two shards on batch boundaries
        assert job["spec"]["models"] == ["e2e-baseline:1", "e2e-attention:1"]
        assert [(s["start"], s["stop"], s["state"]) for s in job["shards"]] == [
            (0, 2, "succeeded"),
            (2, 4, "succeeded"),
        ]
        report = client.get(f"/jobs/{job_id}/report")
        assert report.status_code == 200 and report.headers["content-type"] == "application/json"
        png = client.get(f"/jobs/{job_id}/report.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
        markdown = client.get(f"/jobs/{job_id}/report.md")
        assert markdown.status_code == 200 and "robust acc" in markdown.text
    report = report.json()
    assert [m["name"] for m in report["models"]] == ["e2e-baseline", "e2e-attention"]
    assert report["n"] == 4
    cells = {(c["model"], c["epsilon"]) for c in report["results"]}
    assert cells == {(m, e) for m in ("e2e-baseline:1", "e2e-attention:1") for e in (0.0, 8.0)}
    assert len(report["comparisons"]) == 2  # baseline vs attention at ε 0 and 8
    for cell in report["results"]:
        if cell["epsilon"] == 0:
            assert cell["robust_accuracy"] == cell["clean_accuracy"]


def test_cancel_queued_and_running_jobs(
    stack: Stack, data: Path, baseline_model: str, killed_job: dict[str, Any]
) -> None:
    slow = {
        "models": ["e2e-baseline", "e2e-attention"],
        "dataset": {"kind": "folders", "path": str(data)},
        "evaluation": {
            "attacks": [{"name": "pgd", "params": {"steps": 20}}],
            "epsilons": [1, 2, 3, 4, 5, 6, 7, 8],
            "batch_size": 1,
        },
        "split": "train",
        "shards": 1,
    }
    with stack.client() as client:
        running_id = client.post("/jobs/evaluation", json=slow).json()["job_id"]
        stack.wait_job(
            running_id,
            until=lambda j: j["state"] in TERMINAL or j["progress"] > 0,
            timeout_s=120,
        )
        # the worker (one process) is busy: a new job waits in the queue and is cancelled at once
        queued = client.post("/jobs/training", json=training_spec("never", data)).json()
        cancelled = client.post(f"/jobs/{queued['job_id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        # the running evaluation stops at its next batch
        flagged = client.post(f"/jobs/{running_id}/cancel")
        assert flagged.status_code == 200, flagged.text
        assert flagged.json()["cancel_requested"] or flagged.json()["state"] == "cancelled"
        job = stack.wait_job(running_id, timeout_s=60)
        assert job["state"] == "cancelled", job
        assert job["progress"] < 100
        again = client.post(f"/jobs/{running_id}/cancel")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
        report = client.get(f"/jobs/{running_id}/report")
        assert report.status_code == 409
    # the cancelled training job was never run (its message is dropped when it is delivered)
    time.sleep(2)
    assert stack.job(queued["job_id"])["attempts"] == 0


def test_idempotency_key_returns_the_same_job(stack: Stack) -> None:
    # inside the data root (outside would be a 422), with class folders (none would be a 422 at
    # submission) that hold no image: a dataset only the worker's full load can refuse
    empty = stack.root / "data" / "no-images"
    for name in ("a", "b"):
        (empty / name).mkdir(parents=True)
    spec = training_spec("idem", empty)
    headers = {"Idempotency-Key": f"idem-{time.time()}"}
    with stack.client() as client:
        first = client.post("/jobs/training", json=spec, headers=headers)
        second = client.post("/jobs/training", json=spec, headers=headers)
        assert first.status_code == 202 and second.status_code == 200
        assert first.json()["job_id"] == second.json()["job_id"]
        assert second.json()["created"] is False
        other = client.post("/jobs/training", json={**spec, "name": "idem2"}, headers=headers)
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
        # the class folders hold no image: the job fails on the worker, once, without retries
        job = stack.wait_job(first.json()["job_id"], timeout_s=120)
    assert job["state"] == "failed" and job["attempts"] == 1
    assert "class folder holds no image" in job["error"]


def attack(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"attacks": [{"name": name, "params": params}], "epsilons": [1]}


def test_bad_requests_are_4xx(stack: Stack, data: Path, killed_job: dict[str, Any]) -> None:
    evaluation = {
        "models": ["e2e-attention"],
        "dataset": {"kind": "folders", "path": str(data)},
        "evaluation": {"attacks": [{"name": "fgsm"}], "epsilons": [0, 8]},
    }
    with stack.client() as client:
        assert client.get("/jobs/0123456789abcdef0123456789abcdef").status_code == 404
        assert client.post("/jobs/nope/cancel").status_code == 404
        assert client.get("/jobs/nope/report").status_code == 404
        assert client.get("/jobs/%00").status_code == 404
        assert client.get("/jobs", params={"state": "bogus"}).status_code == 422
        cases = [
            ("/jobs/training", {"name": "x"}),  # no dataset
            ("/jobs/training", training_spec("bad name!", data)),
            ("/jobs/training", training_spec("x", data, train={"epochs": 0})),
            ("/jobs/training", training_spec("x", data / "missing")),
            ("/jobs/evaluation", {**evaluation, "models": ["no-such-model"]}),
            ("/jobs/evaluation", {**evaluation, "models": []}),
            ("/jobs/evaluation", {**evaluation, "evaluation": attack("nope", {})}),
            ("/jobs/evaluation", {**evaluation, "evaluation": attack("pgd", {"steps": -3})}),
            ("/jobs/evaluation", {**evaluation, "split": "holdout"}),
            ("/jobs/evaluation", {**evaluation, "dataset": {"kind": "folders", "path": "/nope"}}),
            ("/jobs/evaluation", {**evaluation, "shards": 0}),
            ("/jobs/evaluation", {**evaluation, "models": ["../escape"]}),
            ("/jobs/training", training_spec("x", Path("bad\x00path"))),
        ]
        for path, body in cases:
            response = client.post(path, json=body)
            assert response.status_code == 422, (path, body, response.status_code, response.text)
            assert response.json()["detail"]
        training_job = killed_job["job"]["id"]
        assert client.get(f"/jobs/{training_job}/report").status_code == 404
        assert client.post(f"/jobs/{training_job}/cancel").status_code == 409
    # no token → 401
    assert httpx.get(f"{stack.url}/jobs", timeout=10).status_code == 401
