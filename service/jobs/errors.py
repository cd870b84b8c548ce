"""Why a job submission was refused: raised by :mod:`service.jobs.runtime`, mapped by the API.

Kept apart from the runtime, which pulls in Celery and the broker client, so that the API's one
error mapper (and every route module that imports it) can name these without loading the queue.
"""

from __future__ import annotations

from service.jobs.schemas import JobView


class JobSpecError(ValueError):
    """The submission is well-formed JSON but cannot run (unknown model, bad attack ...): 422."""


class IdempotencyConflict(ValueError):
    """The Idempotency-Key was used before for a different submission: 409."""


class EnqueueError(RuntimeError):
    """The job was recorded but the broker refused it; the job is marked failed: 503."""

    def __init__(self, job: JobView) -> None:
        # a fixed message: the broker's own error (raised ``from`` it) names its address, so it
        # goes to the log, never into the answer
        super().__init__("the job queue is unavailable; the job is marked failed")
        self.job = job
