"""Issue #10, items 1-3, replayed on a real stack: a uvicorn API and a Celery worker (embedded
broker, SQLite job database: the ``make run`` setup, so no other test's Redis flush interferes).

1. A ``jobs`` token names server files only inside the data root (symlinks followed) or, for
   backbone weights, the weights root; outside, the answer is the same 422 whether the file
   exists or not, and nothing is queued. The worker confines again a spec it reads from the job
   database, and a job's ``error`` never quotes a file nor shows an absolute server path.
2. Manifests shown to a non-admin token, job results and 503 answers show no server path and
   no broker address.
3. Malformed JSON without a valid token is 401, not 422.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.jobs.paths import PathPolicy, PathRefused, redact_paths
from service.jobs.runtime import JobRuntime
from service.jobs.schemas import JobKind
from tests.support.api_server import start_server
from tests.support.images import make_folder_dataset
from tests.support.jobs_stack import TOKEN, Stack, running_stack, training_spec
from tests.support.net import free_port
from tests.support.scratch import scratch_dir

pytestmark = [pytest.mark.integration]

SECRET = "TOPSECRET-first-line"  # the first line of every file outside the data root
TOKENS = {TOKEN: ["jobs", "predict", "explain"], "admin-token": ["admin"]}


@pytest.fixture(scope="module")
def root(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """``data/`` (the data root) with a folder dataset, an npz with ids, a groups CSV whose
    header is no groups header, an empty folder and a symlink to ``outside/``; ``outside/``
    with a folder dataset, a text file and a weights file; ``weights/`` (the weights root)."""
    with scratch_dir(request, tmp_path_factory, "confinement") as scratch:
        root = scratch.resolve()
        data, outside = root / "data", root / "outside"
        make_folder_dataset(data / "tiny", per_class=4)
        make_folder_dataset(outside / "secret-classes")  # trainable: before the fix, it trained
        (outside / "os-release").write_text(f"{SECRET}\nID=debian\n")
        (outside / "backbone.weights.h5").write_bytes(SECRET.encode())
        (root / "weights").mkdir()
        (data / "empty").mkdir()
        (data / "groups.csv").write_text(f"{SECRET},other\na,1\n")
        os.symlink(outside, data / "link-out")
        splits = ("train", "val", "test")
        arrays = {f"{s}_images": np.zeros((2, 8, 8), np.uint8) for s in splits}
        arrays |= {f"{s}_labels": np.array([[0], [1]]) for s in splits}
        arrays |= {f"{s}_ids": np.array([f"{s}0", f"{s}1"]) for s in splits}
        np.savez(data / "ids.npz", **arrays)
        yield root


@pytest.fixture(scope="module")
def stack(root: Path) -> Iterator[Stack]:
    settings = {
        "MEDROBUST_API_TOKENS": json.dumps(TOKENS),
        "MEDROBUST_WEIGHTS_DIR": str(root / "weights"),
    }
    with running_stack(root, redis_url=None, env=settings) as stack:
        yield stack


def _training(dataset: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"name": "probe", "dataset": dataset, "preprocess": {"input_size": 32}, **overrides}


def _folders(path: str) -> dict[str, Any]:
    return _training({"kind": "folders", "path": path})


def _medmnist(groups_csv: str) -> dict[str, Any]:
    return _training({"kind": "medmnist", "path": "ids.npz", "groups_csv": groups_csv})


def _evaluation(path: str) -> dict[str, Any]:
    return {
        "models": ["any-model"],
        "dataset": {"kind": "folders", "path": path},
        "evaluation": {"attacks": [{"name": "fgsm"}], "epsilons": [1]},
    }


def _weights(path: str) -> dict[str, Any]:
    return _training({"kind": "folders", "path": "tiny"}, model={"weights": path})


TRAINING, EVALUATION = "/jobs/training", "/jobs/evaluation"
Body = Callable[[str], dict[str, Any]]


# attack -> (route, body naming a path, an existing file outside the roots, the same but missing)
def _attacks(root: Path) -> dict[str, tuple[str, Body, str, str]]:
    out = root / "outside"
    return {
        "groups_csv /etc/os-release": (TRAINING, _medmnist, "/etc/os-release", "/etc/no-release"),
        "groups_csv outside": (TRAINING, _medmnist, f"{out}/os-release", f"{out}/missing.csv"),
        "..": (TRAINING, _folders, "../outside/secret-classes", "../outside/no"),
        "~": (TRAINING, _folders, "~", "~/no-such-folder"),
        "absolute": (TRAINING, _folders, str(out), f"{out}/no"),
        "symlink out": (TRAINING, _folders, "link-out/secret-classes", "link-out/no"),
        "evaluation outside": (EVALUATION, _evaluation, f"{out}/secret-classes", f"{out}/no"),
        "weights outside": (
            TRAINING,
            _weights,
            f"{out}/backbone.weights.h5",
            f"{out}/missing.weights.h5",
        ),
        "weights via ..": (
            TRAINING,
            _weights,
            "../outside/backbone.weights.h5",
            "../outside/missing.weights.h5",
        ),
    }


def test_paths_outside_the_roots_get_one_422_whether_or_not_they_exist(
    stack: Stack, root: Path
) -> None:
    with stack.client() as client:
        jobs_before = client.get("/jobs").json()["total"]
        for attack, (route, body, existing, missing) in _attacks(root).items():
            answers = [client.post(route, json=body(path)) for path in (existing, missing)]
            statuses = [a.status_code for a in answers]
            assert statuses == [422, 422], (attack, [a.text for a in answers])
            assert answers[0].content == answers[1].content, attack  # no existence oracle
            text = answers[0].text
            assert SECRET not in text and str(root) not in text, (attack, text)
        assert client.get("/jobs").json()["total"] == jobs_before  # nothing was queued


def test_a_missing_path_inside_the_root_is_named_as_the_caller_wrote_it(
    stack: Stack, root: Path
) -> None:
    with stack.client() as client:
        answer = client.post("/jobs/training", json=_folders("no-such-dataset"))
    assert answer.status_code == 422
    assert "'no-such-dataset' not found in the data root" in answer.text
    assert str(root) not in answer.text


def test_the_worker_confines_a_spec_read_from_the_job_database(stack: Stack, root: Path) -> None:
    """A spec written to the database without the API's check (an older API, a tampered row)
    naming a folder outside the data root fails on the worker instead of training on it."""
    settings = Settings(state_dir=root / "state", store_dir=root / "models", data_dir=root / "data")
    runtime = JobRuntime(settings, sweep=False)  # the same database and embedded broker
    try:
        spec = training_spec("stolen", root / "outside" / "secret-classes")
        job, _ = runtime._submit(JobKind.training, spec, None)
    finally:
        runtime.close()
    finished = stack.wait_job(job.id, timeout_s=240)
    assert finished["state"] == "failed", finished
    assert "inside the data root" in finished["error"]
    with stack.client() as client:
        assert "stolen" not in client.get("/models").text  # no model, so no class names


def test_job_errors_quote_no_file_and_show_no_server_path(stack: Stack, root: Path) -> None:
    with stack.client() as client:
        submitted = [
            client.post("/jobs/training", json=body)
            for body in (_medmnist("groups.csv"), _folders("empty"))
        ]
    # the empty folder fails the submission-time dataset check (422); the groups CSV is read
    # only by the worker's full load, so that job is accepted and fails
    assert [s.status_code for s in submitted] == [202, 422], [s.text for s in submitted]
    groups = stack.wait_job(submitted[0].json()["job_id"], timeout_s=240)
    assert groups["state"] == "failed"
    assert "<data>/groups.csv" in groups["error"] and SECRET not in groups["error"]
    empty = submitted[1].json()["detail"]
    assert empty == "dataset: <data>/empty: no class sub-folders"
    for error in (groups["error"], empty):
        assert str(root) not in error and "/tmp" not in error, error


def test_manifests_show_server_paths_to_admin_tokens_only(stack: Stack, root: Path) -> None:
    import keras

    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(0)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    tiny = str(root / "data" / "tiny")
    ModelStore(root / "models").save(
        build_from_config(config),
        "trained-on-tiny",
        config,
        PreprocessConfig(input_size=32),
        ["bright", "dark"],
        training_spec=training_spec("trained-on-tiny", Path(tiny)),
    )
    with stack.client() as client:
        shown = client.get("/models/trained-on-tiny/1")
    with httpx.Client(base_url=stack.url, timeout=60) as admin:
        full = admin.get(
            "/models/trained-on-tiny/1", headers={"Authorization": "Bearer admin-token"}
        )
    assert shown.status_code == full.status_code == 200, (shown.text, full.text)
    assert shown.json()["training_spec"]["dataset"]["path"] == "<data>/tiny"
    assert str(root) not in shown.text
    assert full.json()["training_spec"]["dataset"]["path"] == tiny


@pytest.mark.parametrize("route", ["/jobs/training", "/jobs/evaluation", "/jobs/pacs-study"])
def test_malformed_json_is_401_without_a_valid_token(stack: Stack, route: str) -> None:
    body = b'{"name": "x", "dataset": '
    json_type = {"Content-Type": "application/json"}
    for auth in ({}, {"Authorization": "Bearer wrong"}):
        answer = httpx.post(f"{stack.url}{route}", content=body, headers=auth | json_type)
        assert answer.status_code == 401, (auth, answer.text)
    admin = {"Authorization": "Bearer admin-token"}  # valid, but without the jobs scope
    assert (
        httpx.post(f"{stack.url}{route}", content=body, headers=admin | json_type).status_code
        == 403
    )
    with stack.client() as client:
        assert client.post(route, content=body, headers=json_type).status_code == 422


def test_malformed_alias_update_is_401_without_a_valid_token(stack: Stack) -> None:
    answer = httpx.put(
        f"{stack.url}/models/derm/aliases/production",
        content=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 401, answer.text


def test_a_503_names_no_broker_address(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    make_folder_dataset(tmp_path / "data" / "tiny", per_class=2)
    server = start_server(
        tmp_path / "models",
        tmp_path / "state",
        tmp_path / "uvicorn.log",
        api_tokens=TOKENS,
        data_dir=str(tmp_path / "data"),
        redis_url=f"redis://127.0.0.1:{port}/0",
    )
    try:
        with server.client(TOKEN) as client:
            answer = client.post("/jobs/training", json=_folders("tiny"))
            job = client.get(f"/jobs/{answer.json()['detail']['job_id']}").json()
    finally:
        server.stop()
    assert answer.status_code == 503, answer.text
    assert job["state"] == "failed"
    for text in (answer.text, job["error"]):
        assert str(port) not in text and "redis" not in text.lower(), text


# ---- the policy itself, in process -------------------------------------------------------


def test_a_symlink_loop_and_a_sibling_prefix_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "data-other").mkdir()  # shares the root's string prefix, lies outside it
    os.symlink(data / "loop", data / "loop")
    policy = PathPolicy.from_settings(Settings(data_dir=data, state_dir=tmp_path / "state"))
    for raw in ("loop/x", str(tmp_path / "data-other"), "../data-other", ""):
        with pytest.raises(PathRefused, match="inside the data root"):
            policy.confine(raw, policy.data_roots, "inside the data root")
    assert policy.confine("a/../b", policy.data_roots, "-") == data.resolve() / "b"


def test_redaction_keeps_relative_names_and_hides_every_absolute_path(tmp_path: Path) -> None:
    data = (tmp_path / "data").resolve()
    text = f"{data}/x.csv: bad; {data}-other/y and /root/.keras/z, see 1/2"
    assert redact_paths(text, (("<data>", data),)) == (
        "<data>/x.csv: bad; <path> and <path>, see 1/2"
    )
