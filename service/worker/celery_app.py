"""The worker's Celery app: the sending app of :mod:`service.jobs.dispatch`, plus the worker's
own settings, the job tasks and the lifecycle signals. The worker's composition root: the only
module that imports the task modules.

``make_celery(settings)`` builds it. For the ``celery`` command line,
``celery -A service.worker.celery_app worker`` finds ``app`` here, built lazily from
:func:`service.config.get_settings` on first access (nothing happens at import time).

Whoever only sends jobs (the API, the DIMSE listener) uses :mod:`service.jobs.dispatch` and
never imports this module.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError as DatabaseInterfaceError
from sqlalchemy.exc import OperationalError as DatabaseError

from service.config import Settings, get_settings
from service.jobs.dispatch import (
    EVALUATE_SHARD_TASK,
    EVALUATE_TASK,
    PACS_DIMSE_TASK,
    PACS_STUDY_TASK,
    TRAIN_TASK,
    make_app,
)
from service.jobs.options import JobOptions
from service.worker import evaluation_tasks, pacs_tasks, training_tasks, worker_signals

#: worth a retry: the broker or the database could not be reached for a moment
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseError,
    DatabaseInterfaceError,
    BrokerError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
)

#: every job task: bound (it reads its app and retries itself), acknowledged when done, retried
#: with backoff for transient errors only; registered on the worker's app alone (Celery's
#: default, ``shared``, would add it to every app the process builds, senders included)
TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "shared": False,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}

#: task name → the function that runs it (names and queues: :mod:`service.jobs.dispatch`)
TASKS = {
    TRAIN_TASK: training_tasks.train,
    EVALUATE_TASK: evaluation_tasks.evaluate,
    EVALUATE_SHARD_TASK: evaluation_tasks.evaluate_shard,
    PACS_STUDY_TASK: pacs_tasks.pacs_study,
    PACS_DIMSE_TASK: pacs_tasks.pacs_dimse,
}


def make_celery(settings: Settings) -> Celery:
    """The worker's app for ``settings``, with the job tasks registered (cheap; no connection)."""
    options = JobOptions.from_settings(settings)
    app = make_app(settings)
    app.conf.update(
        # long GPU jobs: take one message at a time, acknowledge it only when done, and hand it
        # back to the broker when the process running it dies (SIGKILL, OOM)
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=options.soft_time_limit_s,
        task_time_limit=options.hard_time_limit_s,
        # cold shutdown (SIGQUIT, `make run`'s Ctrl-C): give running tasks a few seconds, then
        # cancel them; unacknowledged, they go back to the broker and resume on the next start
        worker_soft_shutdown_timeout=5.0,
        # a pool process imports TensorFlow and opens the database before it reports up
        worker_proc_alive_timeout=120,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    for name, run in TASKS.items():
        app.task(name=name, **TASK_OPTIONS)(run)
    worker_signals.connect()
    return app


@lru_cache(maxsize=1)
def _default_app() -> Celery:
    return make_celery(get_settings())


def __getattr__(name: str) -> Any:
    # `celery -A service.worker.celery_app` looks up `app`; build it on first access only
    if name in {"app", "celery"}:
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
