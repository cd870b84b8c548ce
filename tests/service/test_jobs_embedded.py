"""``make run`` on a machine with no server: ``python -m service`` with REDIS_URL unset starts the
API and a worker, which meet through kombu's filesystem broker under the state folder. A tiny
training job (1 epoch) runs to completion while its progress is watched over HTTP; Ctrl-C then
stops everything cleanly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.jobs_stack import Stack, start_stack, training_spec
from tests.support.scratch import scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with scratch_dir(request, tmp_path_factory, "jobs-embedded") as root:
        stack = start_stack(root, redis_url=None, supervised=True)
        yield stack
        stack.stop()


def test_training_job_through_the_filesystem_broker(stack: Stack) -> None:
    assert "broker: embedded (filesystem" in stack.worker_log.read_text()
    assert "on CPU" in stack.worker_log.read_text()  # the device banner of the pool process
    data = stack.root / "data" / "tiny"
    with stack.client() as client:
        ready = client.get("/readyz").json()
        assert ready["checks"]["database"] and ready["checks"]["broker"], ready
        response = client.post("/jobs/training", json=training_spec("embedded", data))
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/jobs/{response.json()['job_id']}"
        seen: list[dict[str, Any]] = []
        job = stack.wait_job(response.json()["job_id"], seen=seen, timeout_s=400)
        metrics = client.get("/metrics").text
    assert job["state"] == "succeeded", f"{job}\n{stack.logs()}"
    assert job["kind"] == "training" and job["attempts"] == 1 and job["error"] is None
    assert job["progress"] == 100.0
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    # progress was visible while it ran, and only went forward
    running = [j for j in seen if j["state"] == "running" and j["batch"]]
    assert running, "never saw the job running with a batch count"
    assert all(j["epochs"] == 1 and j["batches"] == 4 for j in running)
    progress = [j["progress"] for j in seen]
    assert progress == sorted(progress) and 0 < running[-1]["progress"] <= 100
    history = job["metrics"]["history"]
    assert [h["epoch"] for h in history] == [1] and {"loss", "val_loss"} <= set(history[0])
    result = job["result"]
    assert result["model"] == "embedded:1" and len(result["weights_sha256"]) == 64
    assert result["location"] == f"<store>/{result['name']}/{result['version']}"  # no server path
    manifest = stack.root / "models" / result["name"] / str(result["version"]) / "manifest.json"
    assert manifest.is_file() and result["weights_sha256"] in manifest.read_text()
    assert not (stack.root / "state" / "jobs" / job["id"] / "checkpoint").exists()
    # the broker is a folder of message files; the job database is a SQLite file beside it
    assert (stack.root / "state" / "broker" / "queue").is_dir()
    assert (stack.root / "state" / "jobs.db").is_file()
    assert 'medrobust_jobs{state="succeeded"} 1.0' in metrics


def test_ctrl_c_stops_the_api_and_the_worker(stack: Stack) -> None:
    log = stack.worker_log.read_text()
    children = [int(pid) for pid in re.findall(r"started (?:api|worker) \(pid (\d+)\)", log)]
    assert len(children) == 2, log
    assert stack.interrupt() == 0, stack.logs()
    for pid in children:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"child {pid} outlived python -m service\n{stack.logs()}")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{stack.url}/healthz", timeout=2)
