"""Blocking calls to the job database and the broker, bounded in threads and in time.

A broker that accepts connections and never replies holds the calling thread for as long as the
socket timeouts and retries of redis-py, kombu and Celery allow together: tens of seconds. Made
on a shared pool (asyncio's default executor, which also decodes images), a few such calls
starve everything else. So these calls run on small pools of their own, and callers wait at most
a deadline:

- :class:`CachedChecks` for named, argument-free checks (database ping, broker ping, queue
  depths). At most one call per name is in flight, so a hung dependency holds one thread per
  check however often ``/readyz`` or ``/metrics`` is hit; an answer is reused for ``cache_s``;
  a caller waits only until the call in flight is ``timeout_s`` old, so once a check is known to
  hang, every caller answers at once.
- :class:`DeadlineCalls` for one-off calls (sending a job): a few threads, a caller waits
  ``timeout_s`` at most, and a call still waiting for a thread when its caller gives up is
  cancelled, so it never runs late.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The dependency did not answer in time; the call may still be running in its thread."""


@dataclass(frozen=True)
class Outcome:
    """What one check returned, or why it has no value (``error``)."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _InFlight:
    started: float  # time.monotonic()
    future: Future[Outcome]


class CachedChecks:
    """Named checks on their own pool: one call in flight per name, answers cached briefly."""

    def __init__(
        self,
        checks: Mapping[str, Callable[[], Any]],
        *,
        timeout_s: float,
        cache_s: float,
        thread_name: str = "dependency-check",
    ) -> None:
        if not checks:
            raise ValueError("Expected at least one check. Received none.")
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._checks = dict(checks)
        # one thread per name: a hung check can never keep another one from running
        self._executor = ThreadPoolExecutor(len(self._checks), thread_name_prefix=thread_name)
        self._lock = threading.Lock()
        self._in_flight: dict[str, _InFlight] = {}
        self._answers: dict[str, tuple[float, Outcome]] = {}

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    def get(self, name: str) -> Outcome:
        """The check's answer, waiting at most until its call in flight is ``timeout_s`` old."""
        state = self._fresh_or_in_flight(name)
        if isinstance(state, Outcome):
            return state
        try:
            return state.future.result(timeout=max(0.0, self._remaining(state)))
        except FutureTimeout:
            return self._timed_out(state)

    async def aget(self, name: str) -> Outcome:
        """:meth:`get` for the event loop: waits without holding a thread."""
        state = self._fresh_or_in_flight(name)
        if isinstance(state, Outcome):
            return state
        remaining = self._remaining(state)
        if remaining > 0:
            # asyncio.wait never cancels what it waits for: the check runs on for later callers
            await asyncio.wait({asyncio.wrap_future(state.future)}, timeout=remaining)
        return state.future.result() if state.future.done() else self._timed_out(state)

    async def agather(self, names: Iterable[str]) -> dict[str, Outcome]:
        """Several checks at once; the wait is that of the slowest, not their sum."""
        names = list(names)
        outcomes = await asyncio.gather(*(self.aget(name) for name in names))
        return dict(zip(names, outcomes, strict=True))

    def close(self) -> None:
        """Stop taking calls; a call still hung is left to its socket timeout (never joined)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _fresh_or_in_flight(self, name: str) -> Outcome | _InFlight:
        if name not in self._checks:
            raise KeyError(f"Expected one of {sorted(self._checks)}. Received {name!r}.")
        now = time.monotonic()
        with self._lock:
            answer = self._answers.get(name)
            if answer is not None and now - answer[0] < self.cache_s:
                return answer[1]
            state = self._in_flight.get(name)
            if state is None:
                state = _InFlight(now, self._executor.submit(self._call, name))
                self._in_flight[name] = state
            return state

    def _call(self, name: str) -> Outcome:
        try:
            outcome = Outcome(self._checks[name]())
        except Exception as exc:  # noqa: BLE001 - a check reports failures, it does not raise
            outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._answers[name] = (time.monotonic(), outcome)
            del self._in_flight[name]
        return outcome

    def _remaining(self, state: _InFlight) -> float:
        return state.started + self.timeout_s - time.monotonic()

    def _timed_out(self, state: _InFlight) -> Outcome:
        waited = time.monotonic() - state.started
        return Outcome(error=f"no answer for {waited:.1f} s (limit {self.timeout_s:g} s)")


class DeadlineCalls:
    """One-off blocking calls on a few threads of their own, each waited for ``timeout_s``."""

    def __init__(self, workers: int, *, timeout_s: float, thread_name: str) -> None:
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=thread_name)

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``'s result, its exception, or :class:`DeadlineExceeded`."""
        future = self._executor.submit(function, *args)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()  # still queued behind hung calls: it must not run after we gave up
            raise DeadlineExceeded(f"no answer in {self.timeout_s:g} s") from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
