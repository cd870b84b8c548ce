"""``service.jobs.bounded``: how many threads a hung dependency can hold, and what callers get.

The "hung" dependency here is a function blocked on an event the test releases, so these tests
assert call counts and outcomes, never durations.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from service.jobs.bounded import CachedChecks, DeadlineCalls, DeadlineExceeded

SHORT_S = 0.2  # a deadline the blocked calls below always miss


class Blocked:
    """A dependency that hangs until released; counts its calls."""

    def __init__(self, value: object = True) -> None:
        self.value = value
        self.calls = 0
        self.release = threading.Event()

    def __call__(self) -> object:
        self.calls += 1
        self.release.wait(30)
        return self.value


@pytest.fixture
def hung() -> Iterator[Blocked]:
    blocked = Blocked()
    yield blocked
    blocked.release.set()


def test_a_hung_check_holds_one_thread_however_often_it_is_asked(hung: Blocked) -> None:
    checks = CachedChecks({"broker": hung, "database": lambda: True}, timeout_s=SHORT_S, cache_s=0)
    outcomes = [checks.get("broker") for _ in range(20)]
    assert hung.calls == 1
    assert all(not o.ok and "no answer" in o.error for o in outcomes)
    assert checks.get("database").value is True  # its own thread: not starved by the hung one
    hung.release.set()
    checks.close()


def test_the_async_wait_reports_each_check_on_its_own(hung: Blocked) -> None:
    checks = CachedChecks({"broker": hung, "database": lambda: True}, timeout_s=SHORT_S, cache_s=0)
    outcomes = asyncio.run(checks.agather(["database", "broker"]))
    assert outcomes["database"].value is True
    assert not outcomes["broker"].ok
    hung.release.set()
    checks.close()


def test_answers_are_reused_for_cache_s_then_asked_again() -> None:
    calls: list[int] = []

    def count() -> int:
        calls.append(1)
        return len(calls)

    cached = CachedChecks({"n": count}, timeout_s=5, cache_s=3600)
    assert [cached.get("n").value for _ in range(3)] == [1, 1, 1]
    fresh = CachedChecks({"n": count}, timeout_s=5, cache_s=0)
    assert [fresh.get("n").value for _ in range(2)] == [2, 3]
    cached.close()
    fresh.close()


def test_a_failing_check_reports_its_error() -> None:
    def refuse() -> bool:
        raise ConnectionRefusedError("connection refused")

    checks = CachedChecks({"broker": refuse}, timeout_s=5, cache_s=0)
    outcome = checks.get("broker")
    assert not outcome.ok and "ConnectionRefusedError: connection refused" in outcome.error
    with pytest.raises(KeyError, match="Expected one of"):
        checks.get("nosuch")
    checks.close()


def test_a_call_that_misses_its_deadline_while_queued_never_runs(hung: Blocked) -> None:
    calls = DeadlineCalls(1, timeout_s=SHORT_S, thread_name="test-send")
    ran: list[str] = []
    with pytest.raises(DeadlineExceeded):
        calls.run(hung)  # holds the only thread
    with pytest.raises(DeadlineExceeded):
        calls.run(ran.append, "late")  # waits for the thread, gives up, is cancelled
    hung.release.set()
    assert calls.run(ran.append, "next") is None
    assert ran == ["next"]
    calls.close()
