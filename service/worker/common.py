"""What every job task shares: claiming the job, running its work, recording how it ended.

A task takes ids (and a shard's index and range), claims the job (so a duplicate or stale
delivery does nothing: :func:`claimed`), loads the spec from the job database
(:func:`validated_request`), runs its work under a heartbeat and records the outcome
(:func:`run_job`). A bad spec or failing work marks the job failed at once; only transient
errors (broker or database connection) are retried, by Celery (see ``celery_app.TASK_OPTIONS``).

TensorFlow and ``training/`` are imported inside the task bodies, i.e. only in pool processes:
a process forked after TensorFlow (or CUDA) initialised cannot use the GPU.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task
from pydantic import BaseModel, ValidationError

from service.jobs.paths import PathPolicy, redact_paths
from service.jobs.repository import Claim, ClaimOutcome
from service.jobs.schemas import JobState, JobView
from service.worker.context import WorkerContext, worker_context
from service.worker.progress import Heartbeat, JobAborted, JobCancelled

log = logging.getLogger(__name__)

T = TypeVar("T")

#: a redelivery that finds the job held by a live process re-checks this many times, then drops
BUSY_CHECKS = 2


def describe(exc: BaseException, paths: PathPolicy | None = None) -> str:
    """The job's ``error``: server paths relative to their root (``<data>/...``; any other
    absolute path as ``<path>``), so a job record never shows where the service keeps files."""
    text = f"{type(exc).__name__}: {exc}"
    return (paths.redact(text) if paths is not None else redact_paths(text))[:4000]


def json_safe(value: Any) -> Any:
    """NaN and infinities become None (PostgreSQL's json refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``path`` so a reader (or a redelivered task) sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def claimed(task: Task, claim: Claim, busy_checks: int, what: str) -> JobView | None:
    """The job to run, or None; a busy claim re-checks later (the holder may be dying)."""
    if claim.outcome == ClaimOutcome.claimed:
        return claim.job
    if claim.outcome == ClaimOutcome.busy:
        if busy_checks < BUSY_CHECKS:
            options = worker_context(task.app).options
            log.info(
                "%s is held by a live process; checking again in %.0f s", what, options.lease_s
            )
            raise task.retry(
                countdown=options.lease_s,
                kwargs={**task.request.kwargs, "busy_checks": busy_checks + 1},
                max_retries=(task.request.retries or 0) + 1,
            )
        log.warning("%s is still held by a live process: dropping this duplicate delivery", what)
    elif claim.outcome == ClaimOutcome.exhausted:
        log.error("%s: attempts used up; marked failed", what)
    else:
        log.info("%s: nothing to do (finished, cancelled or unknown)", what)
    return None


def validated_request(ctx: WorkerContext, job: JobView, model: type[BaseModel]) -> Any:
    """``job.spec`` as ``model``; None after failing the job when the stored spec no longer
    validates (written by another version): re-running it cannot help."""
    try:
        return model.model_validate(job.spec)
    except ValidationError as exc:
        ctx.repo.finish(job.id, JobState.failed, error=f"invalid {job.kind.value} spec: {exc}")
        return None


class Stopped(NamedTuple):
    """The work did not complete. ``state``: what :func:`run_job` recorded (cancelled or
    failed), or None when the job ended elsewhere and nothing was recorded here."""

    state: JobState | None


def run_job(
    ctx: WorkerContext,
    job: JobView,
    what: str,
    work: Callable[[Heartbeat], T],
    *,
    shard: int | None = None,
    limit_note: str = "",
) -> T | Stopped:
    """``work(heartbeat)``'s value, or how it stopped, recorded in the job database.

    The one place a job run's exceptions become job states: a cancel request → cancelled; the
    job ended elsewhere → nothing written; the soft time limit or any other error → failed
    (for a ``shard``, that shard fails, which fails its job). The work calls
    ``heartbeat.check()`` between steps to stop at a cancel request. ``what`` names the run
    in logs; ``limit_note`` is added to the time-limit message.
    """
    repo = ctx.repo

    def failed(error: str) -> Stopped:
        if shard is None:
            repo.finish(job.id, JobState.failed, error=error)
        else:
            repo.shard_failed(job.id, shard, error)
        return Stopped(JobState.failed)

    with Heartbeat(repo, job.id, ctx.options.heartbeat_s, shard=shard) as heartbeat:
        try:
            return work(heartbeat)
        except JobCancelled:
            repo.finish(job.id, JobState.cancelled, error="cancelled on request")
            return Stopped(JobState.cancelled)
        except JobAborted as exc:
            log.warning("%s stopped: %s", what, exc)
            return Stopped(None)
        except SoftTimeLimitExceeded:
            return failed(f"time limit exceeded ({ctx.options.soft_time_limit_s} s){limit_note}")
        except Exception as exc:  # the model, data, spec or a remote node failed: no retry
            log.exception("%s failed", what)
            return failed(describe(exc, ctx.paths))
