"""The staleness rule: no job stays "running" after the process running it is gone.

A running job's holder writes a heartbeat every few seconds. When the newest heartbeat is older
than ``stale_after_s`` the holder is presumed lost (its host died, or the broker will only hand the
task back after its visibility timeout); a holder on this host whose process no longer exists is
lost as soon as its lease has run out (e.g. a worker stopped with `make run`'s Ctrl-C). A lost
job is sent again: training resumes from its checkpoint, an evaluation re-runs the lost shards;
one that has used up its attempts is marked failed instead. Deliveries that turn out to be
duplicates are dropped by the claim in the task.

A broker that lost its messages (a Redis restarted without persistence) leaves jobs "queued" with
nothing in the queue: a job (or an evaluation's waiting shards) queued for ``stale_after_s`` while
its queue is empty is sent again, at most once per ``stale_after_s``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Protocol

from service.jobs.dispatch import ROUTES
from service.jobs.options import JobOptions
from service.jobs.repository import JobRepository, holder_is_dead, utcnow
from service.jobs.schemas import JobKind, JobState, JobView

log = logging.getLogger(__name__)


class Sender(Protocol):
    def job(self, job_id: str, kind: str) -> None: ...

    def shard(self, job_id: str, index: int, start: int, stop: int) -> None: ...

    def queue_depths(self) -> dict[str, int]: ...


def _queue_empty(sender: Sender, kind: JobKind, cache: dict[str, dict[str, int]]) -> bool:
    """True only when the broker says the job's queue holds no message (unknown: False)."""
    if "depths" not in cache:
        try:
            cache["depths"] = sender.queue_depths()
        except Exception as exc:  # noqa: BLE001 - broker down: resend nothing now
            log.warning("cannot read queue depths: %s", exc)
            cache["depths"] = {}
    return cache["depths"].get(ROUTES[kind].queue) == 0


def _quiet_for(heartbeat: datetime | None, now: datetime) -> float:
    return float("inf") if heartbeat is None else (now - heartbeat).total_seconds()


def _lost(holder: str | None, quiet_s: float, options: JobOptions) -> timedelta | None:
    """How old a heartbeat must be to call this holder lost (None: it is not, yet).

    A holder on this host whose process is gone is lost once its lease has run out (a broker
    redelivery gets that long to claim it first); any other holder after ``stale_after_s``.
    """
    if quiet_s > options.stale_after_s:
        return timedelta(seconds=options.stale_after_s)
    if quiet_s > options.lease_s and holder_is_dead(holder):
        return timedelta(seconds=options.lease_s)
    return None


def sweep_stale(repo: JobRepository, options: JobOptions, sender: Sender) -> list[str]:
    """Requeue (or fail) jobs and shards whose holder is lost; resend lost messages.

    Returns the ids of the jobs it touched.
    """
    stale = timedelta(seconds=options.stale_after_s)
    touched: list[str] = []
    depths: dict[str, dict[str, int]] = {}
    for job in repo.waiting_since(stale):
        if _queue_empty(sender, job.kind, depths) and repo.touch(job.id):
            log.warning(
                "job %s: queued for over %.0f s on an empty queue (message lost?); sent again",
                job.id,
                options.stale_after_s,
            )
            sender.job(job.id, job.kind.value)
            touched.append(job.id)
    now = utcnow()
    for job in repo.stale_running(timedelta(seconds=options.lease_s)):
        if job.kind == JobKind.evaluation and job.shards:
            if _sweep_shards(repo, options, sender, job, now, depths):
                touched.append(job.id)
            continue
        quiet = _quiet_for(job.heartbeat_at, now)
        age = _lost(job.worker, quiet, options)
        if age is None:
            continue
        reason = f"no heartbeat from {job.worker} for {quiet:.0f} s (worker lost)"
        if job.attempts >= options.max_attempts:
            if repo.fail_stale(job.id, age, f"{reason}; gave up after {job.attempts} attempts"):
                log.warning("job %s: %s; marked failed", job.id, reason)
                touched.append(job.id)
        elif repo.requeue_stale(job.id, age, f"requeued: {reason}"):
            log.warning("job %s: %s; sent again", job.id, reason)
            try:
                sender.job(job.id, job.kind.value)
            except Exception as exc:  # noqa: BLE001 - the broker is down: fail, never lose it
                repo.finish(job.id, JobState.failed, error=f"requeue failed: {exc}")
            touched.append(job.id)
    return touched


def _sweep_shards(
    repo: JobRepository,
    options: JobOptions,
    sender: Sender,
    job: JobView,
    now: datetime,
    depths: dict[str, dict[str, int]],
) -> bool:
    """An evaluation: resend lost running shards, and waiting ones whose messages are gone."""
    touched = False
    for shard in job.shards:
        if shard.state != JobState.running:
            continue
        quiet = _quiet_for(shard.heartbeat_at, now)
        age = _lost(shard.worker, quiet, options)
        if age is None:
            continue
        reason = f"no heartbeat from {shard.worker} for {quiet:.0f} s (worker lost)"
        if shard.attempts >= options.max_attempts:
            repo.shard_failed(job.id, shard.index, f"{reason}; attempts used up")
            return True
        if repo.requeue_stale_shard(job.id, shard.index, age):
            log.warning("job %s shard %d: %s; sent again", job.id, shard.index, reason)
            repo.touch(job.id)  # its clock restarts: the shard waits in the queue
            sender.shard(job.id, shard.index, shard.start, shard.stop)
            touched = True
    if touched or _quiet_for(job.heartbeat_at, now) <= options.stale_after_s:
        return touched
    waiting = [s for s in job.shards if s.state == JobState.queued]
    busy = any(s.state == JobState.running for s in job.shards)
    if waiting and not busy and _queue_empty(sender, job.kind, depths):
        log.warning(
            "job %s: %d shard(s) waiting on an empty queue; sent again", job.id, len(waiting)
        )
        repo.touch(job.id)
        for shard in waiting:
            sender.shard(job.id, shard.index, shard.start, shard.stop)
        return True
    return False
