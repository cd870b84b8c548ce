"""A DIMSE job that ends without running (cancelled while queued, attempts used up) still has
its spooled patient data deleted when its message reaches the worker.

A real SQLite job database and real files; the Celery task's own claim-then-discard step is
called as the task calls it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from service.jobs.repository import JobRepository
from service.jobs.schemas import JobKind, JobState
from service.worker.pacs_tasks import discard_ended


@pytest.fixture
def repo(tmp_path: Path):
    repository = JobRepository(f"sqlite:///{tmp_path / 'jobs.db'}", max_attempts=1)
    repository.create_schema()
    yield repository
    repository.dispose()


def spooled(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    files = [folder / "1.2.3.dcm", folder / "1.2.4.dcm"]
    for path in files:
        path.write_bytes(b"patient data")
    return files


def dimse_job(repo: JobRepository, files: list[Path]) -> str:
    job, _ = repo.create(JobKind.pacs_dimse, {"files": [str(p) for p in files]})
    return job.id


def test_job_cancelled_while_queued_has_its_spool_deleted(repo, tmp_path: Path) -> None:
    files = spooled(tmp_path / "spool" / "association")
    job_id = dimse_job(repo, files)
    repo.request_cancel(job_id)

    assert discard_ended(repo.claim(job_id, "worker:1"))
    assert not any(path.exists() for path in files)
    assert not files[0].parent.exists()  # the association's folder, now empty
    assert repo.get(job_id).state == JobState.cancelled


def test_job_out_of_attempts_has_its_spool_deleted(repo, tmp_path: Path) -> None:
    files = spooled(tmp_path / "spool" / "association")
    job_id = dimse_job(repo, files)
    repo.claim(job_id, "worker:lost")  # its one attempt; then the holder vanishes
    assert repo.requeue_stale(job_id, timedelta(0), "requeued: test")

    claim = repo.claim(job_id, "worker:2")
    assert discard_ended(claim)
    assert claim.job.state == JobState.failed
    assert not any(path.exists() for path in files)


def test_queued_job_keeps_its_spool(repo, tmp_path: Path) -> None:
    files = spooled(tmp_path / "spool" / "association")
    job_id = dimse_job(repo, files)

    assert not discard_ended(repo.claim(job_id, "worker:1"))  # claimed: the run deletes them
    assert all(path.exists() for path in files)
