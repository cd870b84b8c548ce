"""Bounding the work of a trust computation: a wall-clock deadline and a model-call tally.

Both computations (the flipping-ε search and randomized smoothing) run many model calls for one
answer. A server must be able to stop them: the deadline is checked *between* model calls (a
compiled call cannot be interrupted), so the overshoot is at most one attack run or one noise
batch, and the tally lets an answer say what it cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class TrustDeadlineExceeded(TimeoutError):
    """A flip search or a certification ran past its wall-clock budget; no answer was made."""


@dataclass
class Deadline:
    """A wall-clock budget of ``seconds`` from creation (``None``: unbounded).

    Uses ``time.monotonic`` so clock changes do not fire or postpone it.
    """

    seconds: float | None
    what: str = "computation"
    _start: float = field(default_factory=time.monotonic, init=False, repr=False)

    def check(self) -> None:
        """Raise :class:`TrustDeadlineExceeded` once the budget is spent."""
        if self.seconds is None:
            return
        elapsed = time.monotonic() - self._start
        if elapsed > self.seconds:
            raise TrustDeadlineExceeded(
                f"{self.what} exceeded its deadline of {self.seconds:g} s "
                f"(stopped after {elapsed:.2f} s)"
            )


@dataclass
class CallTally:
    """Model calls spent on one answer, counted per image.

    ``gradients``: forward-and-backward evaluations (an attack step); ``forwards``: inference-only
    evaluations (clean predictions, verification, noise samples).
    """

    gradients: int = 0
    forwards: int = 0

    @property
    def total(self) -> int:
        return self.gradients + self.forwards
