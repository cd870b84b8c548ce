"""Liveness and progress of a running job: a heartbeat thread and throttled progress writes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from service.jobs.repository import JobRepository
from service.jobs.schemas import JobState

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """The user asked to cancel: stop at the next batch, store nothing."""


class JobAborted(Exception):
    """The job ended elsewhere (another shard failed, it was requeued): stop, write nothing."""


class Heartbeat:
    """Writes the job's heartbeat every ``interval`` s and picks up cancel requests.

    Runs in a daemon thread, so a long TensorFlow step never delays it; database errors are
    logged and retried at the next beat (progress is best-effort, the final state is not).
    """

    def __init__(
        self, repo: JobRepository, job_id: str, interval: float, shard: int | None = None
    ) -> None:
        self.repo, self.job_id, self.interval, self.shard = repo, job_id, interval, shard
        self.cancel_requested = False
        self.state: JobState | None = JobState.running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval)

    def beat(self) -> None:
        try:
            self.state, cancel = self.repo.heartbeat(self.job_id, self.shard)
            self.cancel_requested = self.cancel_requested or cancel
        except Exception as exc:  # noqa: BLE001 - keep beating through a database outage
            log.warning("heartbeat of job %s failed: %s", self.job_id, exc)

    def check(self) -> None:
        """Raise if the job should stop: cancelled, or no longer running here."""
        if self.cancel_requested:
            raise JobCancelled("cancelled on request")
        if self.state is not None and self.state != JobState.running:
            raise JobAborted(f"job is {self.state.value}")
        if self.state is None:
            raise JobAborted("job record is gone")


class Throttle:
    """Calls ``write`` at most every ``interval`` s, unless forced."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = float("-inf")

    def __call__(self, write: Callable[[], object], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - progress is best-effort
            log.warning("progress write failed: %s", exc)
