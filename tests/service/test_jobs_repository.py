"""The job repository against a real SQLite file and the real PostgreSQL on this machine.

PostgreSQL tests run in a schema of their own (created and dropped here) of the ``test`` database
at ``postgresql://postgres@127.0.0.1:5432/test``; they skip, saying so, when it is unreachable.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from service.jobs.models import JobRow, ShardRow
from service.jobs.options import JobOptions
from service.jobs.recovery import sweep_stale
from service.jobs.repository import (
    ClaimOutcome,
    JobRepository,
    make_engine,
    this_holder,
    utcnow,
)
from service.jobs.schemas import JobKind, JobState

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
OTHER_HOST = "some-other-host:4242"  # a holder we cannot check: only its heartbeat counts


def _postgres_schema() -> Iterator[str]:
    try:
        admin = make_engine(POSTGRES_URL)
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure: not reachable here
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable ({type(exc).__name__}: {exc})")
    schema = f"jobs_test_{uuid.uuid4().hex[:10]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobRepository]:
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'state' / 'jobs.db'}"])
    else:
        urls = _postgres_schema()
    url = next(urls)
    repository = JobRepository(url, lease_s=10, max_attempts=2)
    repository.create_schema()
    try:
        yield repository
    finally:
        repository.dispose()
        next(urls, None)  # drops the PostgreSQL schema


def _set(repo: JobRepository, table: type, job_id: str, **values: object) -> None:
    with repo.engine.begin() as connection:
        column = table.id if table is JobRow else table.job_id
        connection.execute(update(table).where(column == job_id).values(**values))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class FakeSender:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, str]] = []
        self.shards: list[tuple[str, int, int, int]] = []
        self.depths = {"training": 0, "evaluation": 0}

    def queue_depths(self) -> dict[str, int]:
        return dict(self.depths)

    def job(self, job_id: str, kind: str) -> None:
        self.jobs.append((job_id, kind))

    def shard(self, job_id: str, index: int, start: int, stop: int) -> None:
        self.shards.append((job_id, index, start, stop))


def test_create_get_list_and_filters(repo: JobRepository) -> None:
    training, created = repo.create(JobKind.training, {"name": "a"})
    evaluation, _ = repo.create(JobKind.evaluation, {"models": ["a:1"]})
    assert created and training.state == JobState.queued and training.progress == 0
    assert repo.get(training.id) == training
    assert repo.get("missing") is None
    jobs, total = repo.list()
    assert total == 2 and [j.id for j in jobs] == [evaluation.id, training.id]  # newest first
    assert [j.id for j in repo.list(kind=JobKind.training)[0]] == [training.id]
    assert repo.list(state=JobState.running) == ([], 0)
    assert repo.list(limit=1, offset=1)[0][0].id == training.id
    assert repo.count_by_state() == {
        "queued": 2,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert training.created_at.tzinfo is not None  # SQLite's naive times come back as UTC
    assert repo.ping()


def test_idempotency_key_under_concurrent_submissions(repo: JobRepository) -> None:
    results = []

    def submit() -> None:
        results.append(repo.create(JobKind.training, {"name": "same"}, "key-1"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert repo.list()[1] == 1


def test_claim_takes_queued_jobs_and_dead_or_stale_holders_only(repo: JobRepository) -> None:
    job, _ = repo.create(JobKind.training, {})
    first = repo.claim(job.id, OTHER_HOST)
    assert first.outcome == ClaimOutcome.claimed and first.job.attempts == 1
    assert first.job.state == JobState.running and first.job.started_at is not None
    # a duplicate delivery while the holder beats: busy
    assert repo.claim(job.id, this_holder()).outcome == ClaimOutcome.busy
    # ... until its heartbeat is older than the lease
    _set(repo, JobRow, job.id, heartbeat_at=utcnow() - timedelta(seconds=30))
    second = repo.claim(job.id, this_holder())
    assert second.outcome == ClaimOutcome.claimed and second.job.attempts == 2
    # the same process may claim again at once (a Celery retry); attempts are used up → failed
    exhausted = repo.claim(job.id, this_holder())
    assert exhausted.outcome == ClaimOutcome.exhausted
    assert exhausted.job.state == JobState.failed and "gave up after 2" in exhausted.job.error
    assert repo.claim(job.id, this_holder()).outcome == ClaimOutcome.gone
    assert repo.claim("missing", this_holder()).outcome == ClaimOutcome.gone


def test_a_holder_process_that_died_on_this_host_is_taken_over_at_once(
    repo: JobRepository,
) -> None:
    job, _ = repo.create(JobKind.training, {})
    repo.claim(job.id, this_holder())
    host = this_holder().rpartition(":")[0]
    _set(repo, JobRow, job.id, worker=f"{host}:{_dead_pid()}", heartbeat_at=utcnow())
    claim = repo.claim(job.id, "another-process:1")
    assert claim.outcome == ClaimOutcome.claimed and claim.job.worker == "another-process:1"


def test_cancel_progress_and_terminal_states(repo: JobRepository) -> None:
    queued, _ = repo.create(JobKind.training, {})
    assert repo.request_cancel(queued.id).state == JobState.cancelled  # at once
    assert repo.claim(queued.id, this_holder()).outcome == ClaimOutcome.gone
    assert repo.request_cancel("missing") is None

    running, _ = repo.create(JobKind.training, {})
    repo.claim(running.id, this_holder())
    assert repo.update_progress(running.id, progress=40.0, epoch=2, metrics={"loss": 0.5})
    flagged = repo.request_cancel(running.id)
    assert flagged.state == JobState.running and flagged.cancel_requested
    assert repo.heartbeat(running.id) == (JobState.running, True)
    assert repo.finish(running.id, JobState.cancelled, error="cancelled on request")
    # a finished job stays finished: no second finish, no progress, no claim
    assert not repo.finish(running.id, JobState.succeeded)
    assert not repo.update_progress(running.id, progress=99.0)
    done = repo.get(running.id)
    assert done.state == JobState.cancelled and done.progress == 40.0 and done.epoch == 2
    assert done.finished_at is not None and done.metrics == {"loss": 0.5}
    assert repo.heartbeat("missing") == (None, False)
    with pytest.raises(ValueError, match="terminal"):
        repo.finish(running.id, JobState.running)
    with pytest.raises(ValueError, match="not progress fields"):
        repo.update_progress(running.id, state="succeeded")


def test_shards_count_once_each_even_when_reported_twice_concurrently(
    repo: JobRepository,
) -> None:
    job, _ = repo.create(JobKind.evaluation, {})
    repo.claim(job.id, this_holder())
    ranges = [(i * 4, i * 4 + 4) for i in range(6)]
    shards = repo.set_shards(job.id, ranges)
    assert [(s.start, s.stop, s.state) for s in shards] == [(a, b, "queued") for a, b in ranges]
    assert repo.set_shards(job.id, [(0, 24)]) == shards  # a redelivered plan: unchanged
    for index in range(6):
        assert repo.claim_shard(job.id, index, this_holder()).outcome == ClaimOutcome.claimed
    repo.shard_progress(job.id, 0, 1, 2)
    assert repo.get(job.id).progress == pytest.approx(100 * 0.5 / 6, abs=0.01)

    counts: list[tuple[int, int]] = []
    lock = threading.Lock()

    def report(index: int) -> None:
        result = repo.shard_succeeded(job.id, index)
        with lock:
            counts.append(result)

    threads = [threading.Thread(target=report, args=(i % 6,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(counts) == (6, 6)
    assert {done for done, _ in counts} >= set(range(1, 7))  # every increment seen exactly once
    final = repo.get(job.id)
    assert all(s.state == JobState.succeeded for s in final.shards)
    assert repo.claim_shard(job.id, 0, this_holder()).outcome == ClaimOutcome.gone


def test_a_failing_shard_fails_the_job(repo: JobRepository) -> None:
    job, _ = repo.create(JobKind.evaluation, {})
    repo.claim(job.id, this_holder())
    repo.set_shards(job.id, [(0, 2), (2, 4)])
    repo.claim_shard(job.id, 0, this_holder())
    repo.shard_failed(job.id, 0, "AttackError: bad")
    failed = repo.get(job.id)
    assert failed.state == JobState.failed and failed.error == "shard 0: AttackError: bad"
    assert failed.shards[0].state == JobState.failed
    assert repo.claim_shard(job.id, 1, this_holder()).outcome == ClaimOutcome.gone


def test_stale_sweep_requeues_then_fails_and_leaves_waiting_shards_alone(
    repo: JobRepository, tmp_path: Path
) -> None:
    from service.config import Settings

    options = JobOptions.from_settings(Settings(state_dir=tmp_path, store_dir=tmp_path))
    options = dataclasses.replace(options, max_attempts=repo.max_attempts)
    long_ago = utcnow() - timedelta(seconds=options.stale_after_s + 60)
    sender = FakeSender()

    fresh, _ = repo.create(JobKind.training, {})
    repo.claim(fresh.id, OTHER_HOST)
    lost, _ = repo.create(JobKind.training, {})
    repo.claim(lost.id, OTHER_HOST)
    _set(repo, JobRow, lost.id, heartbeat_at=long_ago)
    assert sweep_stale(repo, options, sender) == [lost.id]
    assert sender.jobs == [(lost.id, "training")]
    requeued = repo.get(lost.id)
    assert requeued.state == JobState.queued and "no heartbeat" in requeued.error
    assert repo.get(fresh.id).state == JobState.running

    # lost again with its attempts used up (max 2): failed, not requeued
    repo.claim(lost.id, OTHER_HOST)
    _set(repo, JobRow, lost.id, heartbeat_at=long_ago)
    assert sweep_stale(repo, options, sender) == [lost.id]
    assert repo.get(lost.id).state == JobState.failed and len(sender.jobs) == 1

    # an evaluation: the shard whose holder went quiet is sent again; a waiting one is not
    evaluation, _ = repo.create(JobKind.evaluation, {})
    repo.claim(evaluation.id, OTHER_HOST)
    repo.set_shards(evaluation.id, [(0, 2), (2, 4)])
    repo.claim_shard(evaluation.id, 0, OTHER_HOST)
    _set(repo, JobRow, evaluation.id, heartbeat_at=long_ago)
    _set(repo, ShardRow, evaluation.id, heartbeat_at=long_ago)
    assert sweep_stale(repo, options, sender) == [evaluation.id]
    assert sender.shards == [(evaluation.id, 0, 0, 2)]
    shards = repo.get(evaluation.id).shards
    assert [s.state for s in shards] == [JobState.queued, JobState.queued]
    assert sweep_stale(repo, options, sender) == []  # nothing running any more


def test_a_job_whose_message_was_lost_is_sent_again_once_per_period(
    repo: JobRepository, tmp_path: Path
) -> None:
    """E.g. Redis restarted without persistence: the record says queued, the queue is empty."""
    from service.config import Settings

    options = JobOptions.from_settings(Settings(state_dir=tmp_path, store_dir=tmp_path))
    long_ago = utcnow() - timedelta(seconds=options.stale_after_s + 60)
    sender = FakeSender()
    waiting, _ = repo.create(JobKind.training, {})
    recent, _ = repo.create(JobKind.training, {})
    _set(repo, JobRow, waiting.id, updated_at=long_ago)
    sender.depths["training"] = 1  # something is still queued: it may be this job's message
    assert sweep_stale(repo, options, sender) == []
    sender.depths["training"] = 0
    assert sweep_stale(repo, options, sender) == [waiting.id]
    assert sender.jobs == [(waiting.id, "training")]
    assert sweep_stale(repo, options, sender) == []  # not again before another period
    assert repo.get(waiting.id).state == JobState.queued
    assert repo.get(recent.id).state == JobState.queued


def test_a_job_whose_local_holder_died_is_requeued_after_the_lease_only(
    repo: JobRepository, tmp_path: Path
) -> None:
    """E.g. `make run` stopped with Ctrl-C mid-job: on the next start it runs again at once."""
    from service.config import Settings

    options = JobOptions.from_settings(Settings(state_dir=tmp_path, store_dir=tmp_path))
    sender = FakeSender()
    host = this_holder().rpartition(":")[0]
    dead = f"{host}:{_dead_pid()}"
    training, _ = repo.create(JobKind.training, {})
    repo.claim(training.id, this_holder())
    evaluation, _ = repo.create(JobKind.evaluation, {})
    repo.claim(evaluation.id, this_holder())
    repo.set_shards(evaluation.id, [(0, 2), (2, 4)])
    repo.claim_shard(evaluation.id, 1, this_holder())
    just_now = utcnow() - timedelta(seconds=options.lease_s / 2)
    _set(repo, JobRow, training.id, worker=dead, heartbeat_at=just_now)
    _set(repo, JobRow, evaluation.id, heartbeat_at=just_now)
    _set(repo, ShardRow, evaluation.id, worker=dead, heartbeat_at=just_now)
    assert sweep_stale(repo, options, sender) == []  # within the lease: a redelivery may claim
    lease_ago = utcnow() - timedelta(seconds=options.lease_s + 1)
    _set(repo, JobRow, training.id, heartbeat_at=lease_ago)
    _set(repo, JobRow, evaluation.id, heartbeat_at=lease_ago)
    _set(repo, ShardRow, evaluation.id, heartbeat_at=lease_ago)
    assert sorted(sweep_stale(repo, options, sender)) == sorted([training.id, evaluation.id])
    assert sender.jobs == [(training.id, "training")]
    assert sender.shards == [(evaluation.id, 1, 2, 4)]
    assert repo.get(training.id).state == JobState.queued
    assert [s.state for s in repo.get(evaluation.id).shards] == ["queued", "queued"]
    # a live holder that went quiet for less than stale_after_s is left alone
    alive, _ = repo.create(JobKind.training, {})
    repo.claim(alive.id, this_holder())
    _set(repo, JobRow, alive.id, heartbeat_at=lease_ago)
    assert sweep_stale(repo, options, sender) == []
