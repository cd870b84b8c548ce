"""The job runtime and Celery configuration, in process (no worker): what the API relies on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.config import Settings
from service.jobs.dispatch import EVALUATE_SHARD_TASK, TRAIN_TASK
from service.jobs.errors import EnqueueError
from service.jobs.runtime import JobRuntime, _same_submission
from service.jobs.schemas import JobKind, JobState, JobView
from service.worker.celery_app import make_celery
from service.worker.context import CachedStore


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def _settings(root: Path, **values: object) -> Settings:
    return Settings(
        state_dir=root / "state", store_dir=root / "models", data_dir=root / "data", **values
    )


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[JobRuntime]:
    runtime = JobRuntime(_settings(tmp_path), sweep=False)
    yield runtime
    runtime.close()


def test_celery_is_configured_for_long_jobs(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        redis_url="redis://127.0.0.1:6379/15",
        job_soft_time_limit_s=100,
        job_hard_time_limit_s=120,
    )
    conf = make_celery(settings).conf
    assert sorted(q.name for q in conf.task_queues) == ["evaluation", "pacs", "training"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (100, 120)
    assert conf.broker_transport_options["visibility_timeout"] > 120
    assert conf.task_routes[TRAIN_TASK]["queue"] == "training"
    assert conf.task_routes[EVALUATE_SHARD_TASK]["queue"] == "evaluation"
    assert conf.task_ignore_result and conf.accept_content == ["json"]


def test_embedded_broker_lives_under_the_state_dir(tmp_path: Path) -> None:
    conf = make_celery(_settings(tmp_path)).conf
    assert conf.broker_url == "filesystem://"
    options = conf.broker_transport_options
    assert options["data_folder_in"] == options["data_folder_out"]
    assert Path(options["data_folder_in"]).is_dir()
    assert Path(options["data_folder_in"]).is_relative_to((tmp_path / "state").resolve())


def test_ping_stats_and_a_job_recorded_before_it_is_sent(runtime: JobRuntime) -> None:
    assert runtime.ping() == {"database": True, "broker": True}
    job, created = runtime._submit(JobKind.training, {"name": "x"}, None)
    assert created and runtime.get(job.id).state == JobState.queued
    stats = runtime.stats()
    assert stats["jobs"]["queued"] == 1
    assert stats["queues"] == {"training": 1, "evaluation": 0, "pacs": 0}


def test_an_unreachable_broker_fails_the_job_instead_of_losing_it(tmp_path: Path) -> None:
    from training.config import TrainingSpec

    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)  # a class folder: the submission-time check passes
    settings = _settings(tmp_path, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    runtime = JobRuntime(settings, sweep=False)
    try:
        assert runtime.ping() == {"database": True, "broker": False}
        spec = TrainingSpec.model_validate(
            {"name": "lost", "dataset": {"kind": "folders", "path": str(data)}}
        )
        with pytest.raises(EnqueueError) as caught:
            runtime.submit_training(spec, "key")
        job = runtime.get(caught.value.job.id)
        assert job.state == JobState.failed and "could not enqueue" in job.error
        assert runtime.list()[1] == 1
    finally:
        runtime.close()


def test_cached_store_loads_each_version_once() -> None:
    class Store:
        loaded: list[tuple[str, str]] = []

        def resolve(self, name: str, selector: str) -> int:
            return 2 if selector in ("latest", "production", "2") else 1

        def manifest(self, name: str, selector: str) -> SimpleNamespace:
            return SimpleNamespace(weights_sha256=f"sha-{selector}")

        def load(self, name: str, selector: str) -> tuple[str, str]:
            self.loaded.append((name, selector))
            return (name, selector)

    cache = CachedStore(Store(), capacity=1)
    assert cache.load("m") is cache.load("m", "production") is cache.load("m", "2")
    assert cache.loads == 1
    cache.load("m", "1")  # evicts version 2 (capacity 1)
    cache.load("m")
    assert Store.loaded == [("m", "2"), ("m", "1"), ("m", "2")]
    assert cache.resolve("m", "latest") == 2  # everything else passes through


def test_submissions_that_cannot_run_are_refused_before_they_are_recorded(
    runtime: JobRuntime, tmp_path: Path
) -> None:
    from service.jobs.errors import JobSpecError
    from service.jobs.requests import EvaluationRequest
    from training.config import TrainingSpec

    def training(path: str) -> TrainingSpec:
        return TrainingSpec.model_validate(
            {"name": "x", "dataset": {"kind": "folders", "path": path}}
        )

    def evaluation(models: list[str]) -> EvaluationRequest:
        return EvaluationRequest.model_validate(
            {
                "models": models,
                "dataset": {"kind": "folders", "path": str(tmp_path / "data")},
                "evaluation": {"attacks": [{"name": "fgsm"}], "epsilons": [1]},
            }
        )

    for name in ("a", "b"):  # class folders: the dataset passes, each case fails on its own
        (tmp_path / "data" / name).mkdir(parents=True)
    with pytest.raises(JobSpecError, match="not found"):
        runtime.submit_training(training(str(tmp_path / "data" / "missing")))
    with pytest.raises(JobSpecError, match="inside the data root"):
        runtime.submit_training(training("bad\x00path"))
    with pytest.raises(JobSpecError, match="bad model ref"):
        runtime.submit_evaluation(evaluation(["../escape"]))
    with pytest.raises(JobSpecError, match="unknown model"):
        runtime.submit_evaluation(evaluation(["no-such-model:production"]))
    assert runtime.list() == ([], 0)


def _evaluation_job(spec: dict) -> JobView:
    now = datetime.now(UTC)
    return JobView(
        id="0" * 32,
        kind=JobKind.evaluation,
        state=JobState.queued,
        progress=0.0,
        created_at=now,
        updated_at=now,
        spec=spec,
    )


def test_a_reused_key_matches_an_evaluation_only_with_every_field_but_the_pinned_versions():
    """The models were pinned to versions at submission (``derm`` → ``derm:3``): that is the
    same submission; any other difference (here the trust section) is another one (409)."""
    first = {"models": ["derm:3"], "dataset": {"kind": "folders", "path": "x"}, "limit": 5}
    assert _same_submission(_evaluation_job(first), {**first, "models": ["derm"]})
    with_trust = {**first, "models": ["derm"], "trust": {"certify": True}}
    assert not _same_submission(_evaluation_job(first), with_trust)
