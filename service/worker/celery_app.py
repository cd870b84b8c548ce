"""The Celery app, built from the one ``Settings`` object, and the one place tasks are sent from.

``make_celery(settings)`` gives a configured app with the job tasks registered. For the ``celery``
command line, ``celery -A service.worker.celery_app worker`` finds ``app`` here, built lazily from
:func:`service.config.get_settings` on first access (nothing happens at import time).

Broker: Redis when ``REDIS_URL`` is set; otherwise kombu's ``filesystem://`` transport with its
folders under ``state_dir/broker``, so a fresh machine needs no server. No result backend: a job's
state lives in the job database, never in Celery results.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from service.config import Settings, get_settings
from service.jobs.options import JobOptions

TRAINING_QUEUE = "training"
EVALUATION_QUEUE = "evaluation"
PACS_QUEUE = "pacs"  # short inference jobs: a dedicated worker keeps them off long trainings
QUEUES = (TRAINING_QUEUE, EVALUATION_QUEUE, PACS_QUEUE)

TRAIN_TASK = "medrobust.jobs.train"
EVALUATE_TASK = "medrobust.jobs.evaluate"  # plans the shards and sends them
EVALUATE_SHARD_TASK = "medrobust.jobs.evaluate_shard"
PACS_STUDY_TASK = "medrobust.jobs.pacs_study"
PACS_DIMSE_TASK = "medrobust.jobs.pacs_dimse"

SETTINGS_ATTR = "medrobust_settings"


def broker_config(settings: Settings, options: JobOptions) -> dict[str, Any]:
    """Broker URL and transport options: Redis, or folders on local disk."""
    if settings.redis_url:
        return {
            "broker_url": settings.redis_url,
            "broker_transport_options": {
                # an unacknowledged task is handed to another worker after this long; it must
                # exceed the longest task, or a long training would be delivered twice
                "visibility_timeout": options.visibility_timeout_s,
                "socket_connect_timeout": 5,
                "socket_timeout": 30,
            },
            "worker_send_task_events": True,  # for Flower
            "task_send_sent_event": True,
        }
    root = options.broker_dir
    folders = {name: root / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
            "store_processed": False,
            "polling_interval": 0.5,
        },
        "worker_enable_remote_control": False,  # no broadcast over files; `celery inspect` is off
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with the job tasks registered (cheap; no connection yet)."""
    from service.worker import tasks, worker_signals

    options = JobOptions.from_settings(settings)
    app = Celery("medrobust", set_as_current=False)
    exchange = Exchange("medrobust", type="direct")
    app.conf.update(
        task_queues=[Queue(name, exchange, routing_key=name) for name in QUEUES],
        task_default_queue=TRAINING_QUEUE,
        task_default_exchange="medrobust",
        task_default_routing_key=TRAINING_QUEUE,
        task_create_missing_queues=False,
        task_routes={
            TRAIN_TASK: {"queue": TRAINING_QUEUE, "routing_key": TRAINING_QUEUE},
            EVALUATE_TASK: {"queue": EVALUATION_QUEUE, "routing_key": EVALUATION_QUEUE},
            EVALUATE_SHARD_TASK: {"queue": EVALUATION_QUEUE, "routing_key": EVALUATION_QUEUE},
            PACS_STUDY_TASK: {"queue": PACS_QUEUE, "routing_key": PACS_QUEUE},
            PACS_DIMSE_TASK: {"queue": PACS_QUEUE, "routing_key": PACS_QUEUE},
        },
        # long GPU jobs: take one message at a time, acknowledge it only when done, and hand it
        # back to the broker when the process running it dies (SIGKILL, OOM)
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=options.soft_time_limit_s,
        task_time_limit=options.hard_time_limit_s,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # a submission must not hang when the broker is down: fail fast, the job is marked failed
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        # cold shutdown (SIGQUIT, `make run`'s Ctrl-C): give running tasks a few seconds, then
        # cancel them; unacknowledged, they go back to the broker and resume on the next start
        worker_soft_shutdown_timeout=5.0,
        # a pool process imports TensorFlow and opens the database before it reports up
        worker_proc_alive_timeout=120,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        **broker_config(settings, options),
    )
    setattr(app, SETTINGS_ATTR, settings)
    tasks.register(app)
    worker_signals.connect()
    return app


def settings_of(app: Celery) -> Settings:
    settings = getattr(app, SETTINGS_ATTR, None)
    if settings is None:
        raise RuntimeError("this Celery app was not built by service.worker.celery_app.make_celery")
    return settings


class Dispatcher:
    """Sends job tasks; every message carries ids and ranges only, never data."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def training(self, job_id: str) -> None:
        self.app.send_task(TRAIN_TASK, args=[job_id], task_id=f"train-{job_id}")

    def evaluation(self, job_id: str) -> None:
        self.app.send_task(EVALUATE_TASK, args=[job_id], task_id=f"evaluate-{job_id}")

    def shard(self, job_id: str, index: int, start: int, stop: int) -> None:
        self.app.send_task(
            EVALUATE_SHARD_TASK,
            args=[job_id, index, start, stop],
            task_id=f"evaluate-{job_id}-shard-{index}",
        )

    def pacs_study(self, job_id: str) -> None:
        self.app.send_task(PACS_STUDY_TASK, args=[job_id], task_id=f"pacs-study-{job_id}")

    def pacs_dimse(self, job_id: str) -> None:
        self.app.send_task(PACS_DIMSE_TASK, args=[job_id], task_id=f"pacs-dimse-{job_id}")

    def job(self, job_id: str, kind: str) -> None:
        """(Re)send the first task of a job of ``kind``."""
        first_task = {
            "training": self.training,
            "evaluation": self.evaluation,
            "pacs_study": self.pacs_study,
            "pacs_dimse": self.pacs_dimse,
        }
        first_task[kind](job_id)

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each job queue (not those a worker holds unacknowledged)."""
        depths = {}
        with self.app.connection_for_read() as connection, connection.channel() as channel:
            for name in QUEUES:
                depths[name] = int(channel.queue_declare(queue=name, durable=True).message_count)
        return depths

    def ping(self, timeout: float = 2.0) -> bool:
        """Whether the broker accepts a connection now."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False


@lru_cache(maxsize=1)
def _default_app() -> Celery:
    return make_celery(get_settings())


def __getattr__(name: str) -> Any:
    # `celery -A service.worker.celery_app` looks up `app`; build it on first access only
    if name in {"app", "celery"}:
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
