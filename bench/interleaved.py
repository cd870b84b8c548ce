"""Median seconds per call of calls measured in alternating rounds, for the bench scripts.

Each round makes every call once, in turn, so load from other processes on a shared machine falls
on all of them alike: their ratios hold where the absolute times do not. A sibling module of the
scripts, imported by plain name, as they are run: ``.venv/bin/python bench/<script>.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(
    calls: dict[str, Callable[[], object]], rounds: int, warmups: int = 1
) -> dict[str, float]:
    """Median seconds of each of ``calls`` over ``rounds`` rounds, after ``warmups`` untimed
    calls of each (tracing, compiling, allocating: a cost the first calls pay, not the rest)."""
    for call in calls.values():
        for _ in range(warmups):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
