"""Where job messages go and how they are sent: queues, task names, the broker, the dispatcher.

Everything that *sends* a job (the API, the DIMSE listener, the staleness sweep, a planning
evaluation task) needs only what is here: :func:`make_app` gives a Celery app with the broker, the
queues and the routes, and :class:`Dispatcher` sends a task by its name. No task module is
imported, so a sender never loads the worker (nor, through it, ``training/``). The worker builds
on the same app (:func:`service.worker.celery_app.make_celery`) and registers the tasks under
these names.

Broker: Redis when ``REDIS_URL`` is set; otherwise kombu's ``filesystem://`` transport with its
folders under ``state_dir/broker``, so a fresh machine needs no server. No result backend: a job's
state lives in the job database, never in Celery results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from service.config import Settings
from service.jobs.options import JobOptions
from service.jobs.schemas import JobKind

TRAINING_QUEUE = "training"
EVALUATION_QUEUE = "evaluation"
PACS_QUEUE = "pacs"  # short inference jobs: a dedicated worker keeps them off long trainings
QUEUES = (TRAINING_QUEUE, EVALUATION_QUEUE, PACS_QUEUE)

TRAIN_TASK = "medrobust.jobs.train"
EVALUATE_TASK = "medrobust.jobs.evaluate"  # plans the shards and sends them
EVALUATE_SHARD_TASK = "medrobust.jobs.evaluate_shard"
PACS_STUDY_TASK = "medrobust.jobs.pacs_study"
PACS_DIMSE_TASK = "medrobust.jobs.pacs_dimse"


@dataclass(frozen=True)
class Route:
    """Where a job of one kind starts: its queue, its first task, and its message id prefix."""

    queue: str
    task: str
    message_id: str


#: job kind → queue → first task: the one table senders, the worker and the sweep share
ROUTES: dict[JobKind, Route] = {
    JobKind.training: Route(TRAINING_QUEUE, TRAIN_TASK, "train"),
    JobKind.evaluation: Route(EVALUATION_QUEUE, EVALUATE_TASK, "evaluate"),
    JobKind.pacs_study: Route(PACS_QUEUE, PACS_STUDY_TASK, "pacs-study"),
    JobKind.pacs_dimse: Route(PACS_QUEUE, PACS_DIMSE_TASK, "pacs-dimse"),
}
#: every task's queue: each kind's first task, and the shard tasks an evaluation's plan sends
TASK_QUEUES: dict[str, str] = {route.task: route.queue for route in ROUTES.values()} | {
    EVALUATE_SHARD_TASK: EVALUATION_QUEUE
}

_SETTINGS_ATTR = "medrobust_settings"


def broker_config(settings: Settings, options: JobOptions) -> dict[str, Any]:
    """Broker URL and transport options: Redis, or folders on local disk."""
    if settings.redis_url:
        return {
            "broker_url": settings.redis_url,
            "broker_transport_options": {
                # an unacknowledged task is handed to another worker after this long; it must
                # exceed the longest task, or a long training would be delivered twice
                "visibility_timeout": options.visibility_timeout_s,
                # a broker that accepts connections and never replies: a command (a publish, a
                # ping) gives up after this long instead of holding its thread for good
                "socket_connect_timeout": settings.broker_send_timeout_s,
                "socket_timeout": settings.broker_send_timeout_s,
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


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` that can send every job task by name (no task registered;
    cheap: no connection until the first send)."""
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
            task: {"queue": queue, "routing_key": queue} for task, queue in TASK_QUEUES.items()
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.broker_send_timeout_s,
        # a submission must not hang when the broker is down: fail fast, the job is marked failed
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        **broker_config(settings, options),
    )
    setattr(app, _SETTINGS_ATTR, settings)
    return app


def settings_of(app: Celery) -> Settings:
    """The settings ``app`` was built from (the worker's tasks and signals read them here)."""
    settings = getattr(app, _SETTINGS_ATTR, None)
    if settings is None:
        raise RuntimeError("this Celery app was not built by service.jobs.dispatch.make_app")
    return settings


class Dispatcher:
    """Sends job tasks; every message carries ids and ranges only, never data."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def job(self, job_id: str, kind: JobKind | str) -> None:
        """(Re)send the first task of a job of ``kind``."""
        route = ROUTES[JobKind(kind)]
        self.app.send_task(route.task, args=[job_id], task_id=f"{route.message_id}-{job_id}")

    def shard(self, job_id: str, index: int, start: int, stop: int) -> None:
        self.app.send_task(
            EVALUATE_SHARD_TASK,
            args=[job_id, index, start, stop],
            task_id=f"{ROUTES[JobKind.evaluation].message_id}-{job_id}-shard-{index}",
        )

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
