"""Job records in a SQL database: a SQLite file by default, PostgreSQL via ``DATABASE_URL``.

Every state change is one short transaction with a guard on the current state, so the API, any
number of worker processes and a crashed-and-redelivered task can all write to the same record
without a lost update: a finished job never becomes "running" again, a shard is counted once, and
a running job can only be taken over once its holder is gone (dead process or stale heartbeat).
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import Engine, Update, create_engine, event, func, select, text, update
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.jobs.models import Base, JobRow, ShardRow
from service.jobs.options import JobOptions
from service.jobs.schemas import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    JobKind,
    JobState,
    JobView,
    ShardView,
)

_ACTIVE = [s.value for s in ACTIVE_STATES]
_TERMINAL = [s.value for s in TERMINAL_STATES]


class ClaimOutcome(StrEnum):
    claimed = "claimed"  # the caller now holds the job (or shard) and should run it
    busy = "busy"  # another live holder is running it: this delivery is a duplicate
    gone = "gone"  # unknown, finished or cancelled: nothing to do
    exhausted = "exhausted"  # too many attempts; the job was marked failed


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    job: JobView | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def this_holder() -> str:
    """``host:pid`` of the calling process: who holds a running job."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_is_dead(holder: str | None) -> bool:
    """True only when the holder ran on this host and its process no longer exists."""
    if not holder:
        return True
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host: only the heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (killed, not yet reaped) is dead too
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] in {"Z", "X"}
    except (OSError, IndexError):
        return False


def _with_installed_driver(url: URL) -> URL:
    """``postgresql://`` (or ``postgres://``) with whichever psycopg is installed."""
    if url.drivername not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=driver)
    return url.set(drivername="postgresql")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and write-locking transactions."""
    parsed = _with_installed_driver(make_url(url))
    if parsed.get_backend_name() != "sqlite":
        return create_engine(
            parsed, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=_pg_args(parsed)
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # take the write lock up front: a read that later upgrades to a write fails at once
        # with "database is locked" instead of waiting for the busy timeout
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _updated(session: Session, statement: Update) -> int:
    """How many rows ``statement`` changed: the guarded UPDATEs report success through this.

    ``Session.execute`` is typed as returning the general ``Result``; an UPDATE without
    RETURNING really returns a ``CursorResult``, the only kind that carries ``rowcount``.
    """
    result = session.execute(statement)
    if not isinstance(result, CursorResult):
        raise TypeError(f"an UPDATE returned {type(result).__name__}, not a CursorResult")
    return result.rowcount


def _pg_args(url: URL) -> dict[str, Any]:
    return {"connect_timeout": 5} if url.get_backend_name() == "postgresql" else {}


def job_view(row: JobRow, shards: list[ShardRow] | None = None) -> JobView:
    return JobView(
        id=row.id,
        kind=JobKind(row.kind),
        state=JobState(row.state),
        progress=round(float(row.progress or 0.0), 2),
        epoch=row.epoch,
        epochs=row.epochs,
        batch=row.batch,
        batches=row.batches,
        metrics=row.metrics or {},
        result=row.result,
        error=row.error,
        cancel_requested=bool(row.cancel_requested),
        attempts=row.attempts or 0,
        worker=row.worker,
        idempotency_key=row.idempotency_key,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        heartbeat_at=_aware(row.heartbeat_at),
        spec=row.spec,
        shards=[
            ShardView(
                index=s.index,
                start=s.start,
                stop=s.stop,
                state=JobState(s.state),
                done=s.done,
                total=s.total,
                attempts=s.attempts,
                error=s.error,
                worker=s.worker,
                heartbeat_at=_aware(s.heartbeat_at),
            )
            for s in sorted(shards or [], key=lambda s: s.index)
        ],
    )


class JobRepository:
    """All reads and writes of job records. Thread-safe; one per process (engines don't fork)."""

    def __init__(self, url: str, *, lease_s: float = 10.0, max_attempts: int = 3) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.lease = timedelta(seconds=lease_s)
        self.max_attempts = max_attempts
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        Base.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    def _session(self) -> Session:
        return self._sessions()

    # ---- the API side -------------------------------------------------------------------

    def create(
        self, kind: JobKind, spec: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[JobView, bool]:
        """A new queued job, or ``(the earlier job, False)`` when ``idempotency_key`` was used."""
        if idempotency_key is not None:
            existing = self.get_by_key(idempotency_key)
            if existing is not None:
                return existing, False
        now = utcnow()
        row = JobRow(
            id=uuid4().hex,
            kind=kind.value,
            state=JobState.queued.value,
            spec=spec,
            idempotency_key=idempotency_key,
            progress=0.0,
            metrics={},
            cancel_requested=False,
            attempts=0,
            shards_total=0,
            shards_done=0,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self.get_by_key(idempotency_key)  # a concurrent request won the race
            if existing is None:
                raise
            return existing, False
        return job_view(row), True

    def fail_unsent(self, job_id: str, error: str) -> bool:
        """A job the broker never took: failed, and its Idempotency-Key released, so a retry
        under the same key creates and sends a new job instead of finding this failed one
        forever. False (nothing changed) if a worker has claimed it meanwhile: a send that
        outlived its caller's deadline went through after all."""
        now = utcnow()
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.queued, JobRow.attempts == 0)
                .values(
                    state=JobState.failed.value,
                    error=error[:4000],
                    idempotency_key=None,
                    finished_at=now,
                    updated_at=now,
                ),
            )
        return changed == 1

    def get(self, job_id: str) -> JobView | None:
        with self._session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return None
            shards = list(session.scalars(select(ShardRow).where(ShardRow.job_id == job_id)))
            return job_view(row, shards)

    def get_by_key(self, idempotency_key: str) -> JobView | None:
        with self._session() as session:
            job_id = session.scalar(
                select(JobRow.id).where(JobRow.idempotency_key == idempotency_key)
            )
        return None if job_id is None else self.get(job_id)

    def list(
        self,
        state: JobState | None = None,
        kind: JobKind | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobView], int]:
        """Newest first; with the total count matching the filters."""
        query = select(JobRow)
        count = select(func.count()).select_from(JobRow)
        if state is not None:
            query, count = query.where(JobRow.state == state), count.where(JobRow.state == state)
        if kind is not None:
            query, count = query.where(JobRow.kind == kind), count.where(JobRow.kind == kind)
        query = query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)
        with self._session() as session:
            rows = list(session.scalars(query))
            total = session.scalar(count) or 0
        return [job_view(row) for row in rows], int(total)

    def count_by_state(self) -> dict[str, int]:
        """How many jobs are in each state (every state listed, zeros included)."""
        with self._session() as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            counts = {state: int(n) for state, n in rows}
        return {state.value: counts.get(state.value, 0) for state in JobState}

    def request_cancel(self, job_id: str) -> JobView | None:
        """Queued: cancelled at once. Running: flagged; the task stops at its next batch."""
        now = utcnow()
        with self._session() as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                return None
            if row.state == JobState.queued:
                row.state, row.finished_at = JobState.cancelled.value, now
                row.updated_at = now
            elif row.state == JobState.running:
                row.cancel_requested, row.updated_at = True, now
        return self.get(job_id)

    # ---- the worker side ----------------------------------------------------------------

    def claim(self, job_id: str, holder: str) -> Claim:
        """Take a queued job, or a running one whose holder is gone (a redelivery)."""
        now = utcnow()
        with self._session() as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.state in _TERMINAL:
                return Claim(ClaimOutcome.gone, job_view(row) if row else None)
            if row.state == JobState.running and not self._holder_gone(row, now, holder):
                return Claim(ClaimOutcome.busy, job_view(row))
            if row.attempts >= self.max_attempts:
                self._fail_row(
                    row,
                    now,
                    f"gave up after {row.attempts} attempts: the worker running it was lost "
                    f"each time (killed, out of memory or timed out); last: {row.worker}",
                )
                return Claim(ClaimOutcome.exhausted, job_view(row))
            row.state = JobState.running.value
            row.attempts += 1
            row.worker = holder
            row.started_at = row.started_at or now
            row.heartbeat_at = row.updated_at = now
            return Claim(ClaimOutcome.claimed, job_view(row))

    def _holder_gone(self, row: JobRow | ShardRow, now: datetime, holder: str) -> bool:
        """The holder is this very process (a retry), has died, or its heartbeat is stale."""
        heartbeat = _aware(row.heartbeat_at)
        if row.worker == holder or holder_is_dead(row.worker) or heartbeat is None:
            return True
        return now - heartbeat > self.lease

    def heartbeat(self, job_id: str, shard: int | None = None) -> tuple[JobState | None, bool]:
        """Mark the job (and shard) alive; returns its state and whether cancel was asked."""
        now = utcnow()
        with self._session() as session, session.begin():
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.running)
                .values(heartbeat_at=now)
            )
            if shard is not None:
                session.execute(
                    update(ShardRow)
                    .where(ShardRow.job_id == job_id, ShardRow.index == shard)
                    .values(heartbeat_at=now)
                )
            found = session.execute(
                select(JobRow.state, JobRow.cancel_requested).where(JobRow.id == job_id)
            ).first()
        if found is None:
            return None, False
        return JobState(found[0]), bool(found[1])

    def update_progress(self, job_id: str, **values: Any) -> bool:
        """Progress fields (progress, epoch, epochs, batch, batches, metrics) of a running job."""
        allowed = {"progress", "epoch", "epochs", "batch", "batches", "metrics"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"not progress fields: {sorted(unknown)}")
        now = utcnow()
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.running)
                .values(**values, heartbeat_at=now, updated_at=now),
            )
        return changed == 1

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Move an active job to a terminal state; False if it had already ended."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state} is not a terminal state")
        now = utcnow()
        values: dict[str, Any] = {"state": state.value, "finished_at": now, "updated_at": now}
        if error is not None:
            values["error"] = error[:4000]
        if result is not None:
            values["result"] = result
        if state == JobState.succeeded:
            values["progress"] = 100.0
            values.setdefault("error", None)  # e.g. a "requeued: ..." note of an earlier attempt
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(JobRow).where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE)).values(values),
            )
        return changed == 1

    def _fail_row(self, row: JobRow, now: datetime, error: str) -> None:
        row.state, row.error = JobState.failed.value, error
        row.finished_at = row.updated_at = now

    # ---- evaluation shards --------------------------------------------------------------

    def set_shards(
        self, job_id: str, ranges: builtins.list[tuple[int, int]]
    ) -> builtins.list[ShardView]:
        """Create the shard rows once; a redelivered plan gets the existing ones back."""
        with self._session() as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise LookupError(job_id)
            existing = list(session.scalars(select(ShardRow).where(ShardRow.job_id == job_id)))
            if not existing:
                for index, (start, stop) in enumerate(ranges):
                    session.add(
                        ShardRow(
                            job_id=job_id,
                            index=index,
                            start=start,
                            stop=stop,
                            state=JobState.queued.value,
                            done=0,
                            total=0,
                            attempts=0,
                        )
                    )
                row.shards_total, row.shards_done = len(ranges), 0
                row.updated_at = utcnow()
        job = self.get(job_id)
        assert job is not None
        return job.shards

    def claim_shard(self, job_id: str, index: int, holder: str) -> Claim:
        """Take a shard of a running job (as :meth:`claim` does for jobs)."""
        now = utcnow()
        with self._session() as session, session.begin():
            job = session.get(JobRow, job_id, with_for_update=True)
            shard = session.get(ShardRow, (job_id, index), with_for_update=True)
            if job is None or shard is None or job.state != JobState.running:
                return Claim(ClaimOutcome.gone)
            if shard.state == JobState.succeeded:
                return Claim(ClaimOutcome.gone, job_view(job))
            if shard.state == JobState.running and not self._holder_gone(shard, now, holder):
                return Claim(ClaimOutcome.busy, job_view(job))
            if shard.attempts >= self.max_attempts:
                message = (
                    f"shard {index}: gave up after {shard.attempts} attempts: the worker "
                    f"running it was lost each time; last: {shard.worker}"
                )
                shard.state, shard.error = JobState.failed.value, message
                self._fail_row(job, now, message)
                return Claim(ClaimOutcome.exhausted, job_view(job))
            shard.state, shard.worker = JobState.running.value, holder
            shard.attempts += 1
            shard.heartbeat_at = job.heartbeat_at = job.updated_at = now
            return Claim(ClaimOutcome.claimed, job_view(job))

    def shard_progress(self, job_id: str, index: int, done: int, total: int) -> None:
        """A shard's units done; the job's percent is the size-weighted mean of its shards."""
        now = utcnow()
        with self._session() as session, session.begin():
            session.execute(
                update(ShardRow)
                .where(ShardRow.job_id == job_id, ShardRow.index == index)
                .values(done=done, total=total, heartbeat_at=now)
            )
            shards = session.execute(
                select(ShardRow.start, ShardRow.stop, ShardRow.done, ShardRow.total).where(
                    ShardRow.job_id == job_id
                )
            ).all()
            size = sum(stop - start for start, stop, _, _ in shards) or 1
            share = sum((stop - start) * (d / t if t else 0.0) for start, stop, d, t in shards)
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.running)
                .values(progress=min(99.0, 100.0 * share / size), heartbeat_at=now, updated_at=now)
            )

    def shard_succeeded(self, job_id: str, index: int) -> tuple[int, int]:
        """Count the shard once (atomically); returns ``(shards done, shards total)``."""
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(ShardRow)
                .where(
                    ShardRow.job_id == job_id,
                    ShardRow.index == index,
                    ShardRow.state != JobState.succeeded,
                )
                .values(state=JobState.succeeded.value, done=ShardRow.total),
            )
            if changed == 1:
                session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id)
                    .values(shards_done=JobRow.shards_done + 1, updated_at=utcnow())
                )
            done, total = session.execute(
                select(JobRow.shards_done, JobRow.shards_total).where(JobRow.id == job_id)
            ).one()
        return int(done), int(total)

    def shard_failed(self, job_id: str, index: int, error: str) -> None:
        """The shard failed, so the job fails with its error."""
        with self._session() as session, session.begin():
            session.execute(
                update(ShardRow)
                .where(ShardRow.job_id == job_id, ShardRow.index == index)
                .values(state=JobState.failed.value, error=error[:4000])
            )
        self.finish(job_id, JobState.failed, error=f"shard {index}: {error}")

    # ---- staleness ----------------------------------------------------------------------

    def stale_running(self, older_than: timedelta) -> builtins.list[JobView]:
        """Running jobs whose last heartbeat is older than ``older_than``."""
        cutoff = utcnow() - older_than
        with self._session() as session:
            rows = list(
                session.scalars(
                    select(JobRow).where(
                        JobRow.state == JobState.running,
                        func.coalesce(JobRow.heartbeat_at, JobRow.updated_at) < cutoff,
                    )
                )
            )
            shards = list(
                session.scalars(
                    select(ShardRow).where(ShardRow.job_id.in_([row.id for row in rows]))
                )
            )
        return [job_view(row, [s for s in shards if s.job_id == row.id]) for row in rows]

    def requeue_stale(self, job_id: str, older_than: timedelta, reason: str) -> bool:
        """Running with a stale heartbeat → queued again (shards not yet done too)."""
        now = utcnow()
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(JobRow)
                .where(*_running_and_silent_since(job_id, now - older_than))
                .values(state=JobState.queued.value, error=reason, updated_at=now),
            )
            if changed == 1:
                session.execute(
                    update(ShardRow)
                    .where(ShardRow.job_id == job_id, ShardRow.state == JobState.running)
                    .values(state=JobState.queued.value)
                )
        return changed == 1

    def fail_stale(self, job_id: str, older_than: timedelta, reason: str) -> bool:
        """Running with a stale heartbeat → failed with ``reason``."""
        now = utcnow()
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(JobRow)
                .where(*_running_and_silent_since(job_id, now - older_than))
                .values(state=JobState.failed.value, error=reason, finished_at=now, updated_at=now),
            )
        return changed == 1

    def requeue_stale_shard(self, job_id: str, index: int, older_than: timedelta) -> bool:
        """A running shard with a stale heartbeat → queued again."""
        cutoff = utcnow() - older_than
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(ShardRow)
                .where(
                    ShardRow.job_id == job_id,
                    ShardRow.index == index,
                    ShardRow.state == JobState.running,
                    func.coalesce(ShardRow.heartbeat_at, cutoff - timedelta(seconds=1)) < cutoff,
                )
                .values(state=JobState.queued.value),
            )
        return changed == 1

    def waiting_since(self, older_than: timedelta) -> builtins.list[JobView]:
        """Queued jobs not (re)sent or touched for ``older_than``."""
        cutoff = utcnow() - older_than
        with self._session() as session:
            rows = session.scalars(
                select(JobRow).where(JobRow.state == JobState.queued, JobRow.updated_at < cutoff)
            )
            return [job_view(row) for row in rows]

    def touch(self, job_id: str) -> bool:
        """Mark an active job as just (re)sent: its clocks for the staleness rule restart."""
        now = utcnow()
        with self._session() as session, session.begin():
            changed = _updated(
                session,
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_ACTIVE))
                .values(updated_at=now, heartbeat_at=func.coalesce(JobRow.heartbeat_at, now)),
            )
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.running)
                .values(heartbeat_at=now)
            )
        return changed == 1


def open_job_database(settings: Settings) -> tuple[JobOptions, JobRepository]:
    """The job options and the job database of ``settings``, its schema created.

    The API, each worker process and the worker's start-up sweep open it the same way: leases
    and attempts from the options, so every writer applies the same takeover rule.
    """
    options = JobOptions.from_settings(settings)
    repo = JobRepository(
        settings.resolved_database_url, lease_s=options.lease_s, max_attempts=options.max_attempts
    )
    try:
        repo.create_schema()
    except BaseException:
        repo.dispose()
        raise
    return options, repo


def _running_and_silent_since(job_id: str, cutoff: datetime) -> tuple:
    """The job is running and has given no sign of life (heartbeat or update) since ``cutoff``."""
    return (
        JobRow.id == job_id,
        JobRow.state == JobState.running,
        func.coalesce(JobRow.heartbeat_at, JobRow.updated_at) < cutoff,
    )
