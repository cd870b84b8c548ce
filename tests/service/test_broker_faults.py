"""A hung or lost broker on the real stack: a real uvicorn API whose ``REDIS_URL`` points at a TCP
endpoint that accepts connections and never answers (``tcp_faults.SwitchableBroker``), which can
then start forwarding to the real Redis.

What must hold (issue #10, items 7-9): dependency checks never starve the pool that decodes
images, and report each dependency on its own; a broker outage leaves serving readiness alone;
a submission fails with 503 within the send timeout; a key whose first attempt got 503 works once
the broker is back.

The time bounds here are correctness bounds, not performance figures: before the fix each of
these calls waited out Redis socket timeouts and retries (30 s and more); the bounds are a few
times the configured timeouts, far from both.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.support.api_server import LiveServer, start_job_api
from tests.support.images import png_bytes
from tests.support.jobs_stack import require_redis, training_spec
from tests.support.scratch import scratch_dir
from tests.support.tcp_faults import SwitchableBroker

pytestmark = pytest.mark.integration

REDIS_DB = 13  # this module's own database: the job tests flush 15
CHECK_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 3.0
# asyncio's default pool has at most 32 threads (min(32, cpus + 4)): more concurrent /readyz
# calls than that would exhaust it on any machine if each left a thread stuck on the broker
READYZ_BURST = 40


@pytest.fixture(scope="module")
def broker() -> Iterator[SwitchableBroker]:
    require_redis(f"redis://127.0.0.1:6379/{REDIS_DB}")
    redis.Redis(db=REDIS_DB).flushdb()
    with SwitchableBroker(mode="hung") as fake:
        yield fake


@pytest.fixture(scope="module")
def api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    broker: SwitchableBroker,
) -> Iterator[LiveServer]:
    with scratch_dir(request, tmp_path_factory, "broker-faults") as root:
        server = start_job_api(
            root,
            broker.url(REDIS_DB),
            dependency_check_timeout_s=CHECK_TIMEOUT_S,
            dependency_check_cache_s=1.0,
            broker_send_timeout_s=SEND_TIMEOUT_S,
        )
        yield server
        server.stop()


@pytest.fixture
def hung(broker: SwitchableBroker) -> SwitchableBroker:
    broker.set_mode("hung")
    return broker


def _timed(call, *args, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - started


def _spec(api: LiveServer, name: str) -> dict:
    return training_spec(name, api.state_dir.parent / "data" / "tiny")


def test_readiness_reports_each_dependency_and_serving_stays_ready(api, hung):
    with api.client() as client:
        serving = client.get("/readyz")
        jobs = client.get("/readyz/jobs")
    assert serving.status_code == 200, serving.text  # predictions are still served
    assert jobs.status_code == 503, jobs.text
    for body in (serving.json(), jobs.json()):
        assert body["checks"] == {"models": True, "database": True, "broker": False}, body
        assert set(body["errors"]) == {"broker"}, body
    assert serving.json()["requires"] == ["models"]
    assert jobs.json()["requires"] == ["database", "broker"]


def test_readyz_calls_against_a_hung_broker_starve_nothing(api, hung):
    with api.client() as client, ThreadPoolExecutor(READYZ_BURST) as pool:
        burst = list(pool.map(lambda _: client.get("/readyz"), range(READYZ_BURST)))
        image = base64.b64encode(png_bytes()).decode()
        predict, predict_s = _timed(
            client.post, "/predict", json={"image_base64": image, "task": "derm"}
        )
        metrics, metrics_s = _timed(client.get, "/metrics")
    assert predict.status_code == 200, predict.text
    assert predict_s < 3 * CHECK_TIMEOUT_S, f"/predict took {predict_s:.1f} s"
    assert metrics.status_code == 200
    assert metrics_s < 3 * CHECK_TIMEOUT_S, f"/metrics took {metrics_s:.1f} s"
    assert 'medrobust_jobs{state="queued"}' in metrics.text  # the database still answers
    assert {r.status_code for r in burst} == {200}


def test_a_submission_to_a_hung_broker_fails_fast_with_503(api, hung):
    with api.client() as client:
        response, elapsed = _timed(client.post, "/jobs/training", json=_spec(api, "hung"))
        assert response.status_code == 503, response.text
        job = client.get(f"/jobs/{response.json()['detail']['job_id']}").json()
    assert elapsed < 2 * SEND_TIMEOUT_S, f"503 after {elapsed:.1f} s"
    assert job["state"] == "failed" and "could not enqueue" in job["error"]


def _queued_task_ids(queue: str) -> set[str]:
    messages = redis.Redis(db=REDIS_DB).lrange(queue, 0, -1)
    return {json.loads(message)["headers"]["id"] for message in messages}


def test_a_key_whose_first_attempt_got_503_succeeds_once_the_broker_is_back(api, hung):
    key = {"Idempotency-Key": "retry-after-outage"}
    with api.client() as client:
        first = client.post("/jobs/training", json=_spec(api, "retry"), headers=key)
        assert first.status_code == 503, first.text
        lost = first.json()["detail"]["job_id"]

        hung.set_mode("up")
        retry = client.post("/jobs/training", json=_spec(api, "retry"), headers=key)
        assert retry.status_code == 202, retry.text
        assert retry.json()["created"] is True and retry.json()["state"] == "queued"
        job_id = retry.json()["job_id"]
        again = client.post("/jobs/training", json=_spec(api, "retry"), headers=key)
        assert again.status_code == 200 and again.json()["job_id"] == job_id, again.text

        assert client.get(f"/jobs/{job_id}").json()["idempotency_key"] == key["Idempotency-Key"]
        assert client.get(f"/jobs/{lost}").json()["state"] == "failed"
        assert client.get("/readyz/jobs").status_code == 200
    # the job really reached the broker: its task message waits in the training queue
    assert f"train-{job_id}" in _queued_task_ids("training")
