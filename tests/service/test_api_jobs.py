"""The job routes' answers, in-process (TestClient) over a real JobRuntime: a SQLite job
database and the embedded broker (the ``make run`` setup). No worker runs, so a submitted job
stays queued; what is checked is how each refusal of the runtime reaches the client, mapped once
in ``service.api.errors`` (422 bad spec, 409 reused Idempotency-Key or finished job, 404
unknown job, 503 runtime not open). A broker that fails a submission (503 naming the failed job)
is replayed on a real hung broker in test_broker_faults.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.support.app_settings import local_settings
from tests.support.images import make_folder_dataset
from tests.support.jobs_stack import AUTH, TOKEN, training_spec
from tests.support.scratch import scratch_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    with scratch_dir(request, tmp_path_factory, "jobs-api") as scratch:
        root = scratch.resolve()
        make_folder_dataset(root / "data" / "tiny", per_class=2)
        # root/models stays empty: no model loads, and every model ref is unknown
        settings = local_settings(root, api_tokens={TOKEN: ["jobs"]})
        with TestClient(create_app(settings), headers=AUTH) as http:
            yield http


def spec(name: str = "jobs-api") -> dict:
    return training_spec(name, "tiny")  # relative: under the data root


def evaluation(models: list[str]) -> dict:
    return {
        "models": models,
        "dataset": {"kind": "folders", "path": "tiny"},
        "evaluation": {"attacks": [{"name": "fgsm", "params": {}}], "epsilons": [1]},
    }


def test_a_submission_answers_202_then_the_same_job_for_its_idempotency_key(client):
    key = {"Idempotency-Key": "jobs-api-once"}

    first = client.post("/jobs/training", json=spec(), headers=key)
    again = client.post("/jobs/training", json=spec(), headers=key)

    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    assert first.headers["location"] == f"/jobs/{job_id}"
    assert (first.json()["created"], first.json()["state"]) == (True, "queued")
    assert again.status_code == 200, again.text
    assert (again.json()["job_id"], again.json()["created"]) == (job_id, False)


def test_a_reused_idempotency_key_for_another_spec_is_409(client):
    key = {"Idempotency-Key": "jobs-api-conflict"}
    assert client.post("/jobs/training", json=spec("a"), headers=key).status_code == 202

    other = client.post("/jobs/training", json=spec("b"), headers=key)

    assert other.status_code == 409, other.text
    assert "Idempotency-Key" in other.json()["detail"]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (evaluation(["nosuch"]), "unknown model 'nosuch'"),
        (evaluation(["../derm"]), "bad model ref '../derm'"),
        (evaluation(["derm\n"]), "bad model ref 'derm\\n'"),
        ({**evaluation(["x"]), "dataset": {"kind": "folders", "path": "/etc"}}, "data root"),
    ],
)
def test_a_spec_the_runtime_refuses_is_422_with_its_reason(client, body, said):
    response = client.post("/jobs/evaluation", json=body)

    assert response.status_code == 422, response.text
    assert said in response.json()["detail"]


def test_unknown_jobs_are_404_and_a_training_job_has_no_report(client):
    job_id = client.post("/jobs/training", json=spec("no-report")).json()["job_id"]

    for path in ("/jobs/nope", "/jobs/" + "0" * 32, "/jobs/" + "0" * 32 + "/report"):
        assert client.get(path).status_code == 404, path
    assert client.post("/jobs/" + "0" * 32 + "/cancel").status_code == 404
    report = client.get(f"/jobs/{job_id}/report")
    assert report.status_code == 404 and "only evaluations" in report.json()["detail"]
    assert client.get(f"/jobs/{job_id}").json()["state"] == "queued"


def test_the_job_routes_are_503_while_the_runtime_is_not_open(client):
    runtime, client.app.state.jobs = client.app.state.jobs, None
    try:
        listed = client.get("/jobs")
        submitted = client.post("/jobs/training", json=spec("closed"))
    finally:
        client.app.state.jobs = runtime

    assert (listed.status_code, submitted.status_code) == (503, 503)
    assert listed.json() == {"detail": "the job runtime is not open"}
