"""Worker lifecycle: the start banner, per-process set-up (devices, models) and the stale sweep.

- ``worker_init`` (main process): remember the app; print which queues, broker and database.
- ``worker_process_init`` (each pool process, after the fork): open the process's context, turn
  on GPU memory growth, print the TensorFlow device banner, preload ``settings.preload_models``.
  TensorFlow is first touched here, never in the main process: a process forked after CUDA
  initialisation cannot use the GPU.
- ``worker_ready``: requeue or fail jobs left "running" by a worker that is gone.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery, signals
from sqlalchemy.engine import make_url

from service.jobs.dispatch import Dispatcher, settings_of
from service.jobs.recovery import sweep_stale
from service.jobs.repository import JobRepository, open_job_database
from service.worker.context import close_worker_context, worker_context

log = logging.getLogger("service.worker")

_app: Celery | None = None


def _banner(line: str) -> None:
    print(f"[medrobust worker] {line}", file=sys.stderr, flush=True)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    global _app
    _app = sender.app
    settings = settings_of(_app)
    broker = "redis" if settings.redis_url else f"embedded (filesystem under {settings.state_dir})"
    database = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    _banner(f"broker: {broker}; job database: {database}; model store: {settings.store_dir}")
    _banner("the TensorFlow device is reported by each pool process as it starts")


def _on_process_init(**_: Any) -> None:
    if _app is None:  # a pool process of a worker not started through `celery worker`
        return
    from training.devices import configure_devices  # TensorFlow: only after the fork

    banner = configure_devices()
    context = worker_context(_app)
    _banner(f"pool process {os.getpid()}: {banner}")
    _preload(context)


def _preload(context: Any) -> None:
    """Load ``settings.preload_models`` into this process's cache (none listed: on first use)."""
    from training.model_ref import ModelRef

    for ref in context.settings.preload_models:
        try:
            parsed = ModelRef.parse(ref)
            loaded = context.models.load(parsed.name, parsed.selector)
            _banner(f"pool process {os.getpid()}: loaded {loaded.manifest.ref}")
        except Exception as exc:  # noqa: BLE001 - a missing model must not stop the worker
            log.warning("cannot preload model %s: %s", ref, exc)


def _on_process_shutdown(**_: Any) -> None:
    close_worker_context()


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = _app or getattr(sender, "app", None)
    if app is None:
        return
    repo: JobRepository | None = None
    try:
        options, repo = open_job_database(settings_of(app))
        touched = sweep_stale(repo, options, Dispatcher(app))
        if touched:
            _banner(f"recovered {len(touched)} job(s) left running by a lost worker: {touched}")
    except Exception:  # noqa: BLE001 - a sweep must never stop the worker from starting
        log.exception("stale-job sweep at start-up failed")
    finally:
        if repo is not None:
            repo.dispose()  # no connection may cross into pool processes forked later
    _banner("ready")


def connect() -> None:
    """Connect the handlers once per process (idempotent)."""
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="medrobust.worker_init")
    signals.worker_process_init.connect(
        _on_process_init, weak=False, dispatch_uid="medrobust.process_init"
    )
    signals.worker_process_shutdown.connect(
        _on_process_shutdown, weak=False, dispatch_uid="medrobust.process_shutdown"
    )
    signals.worker_ready.connect(
        _on_worker_ready, weak=False, dispatch_uid="medrobust.worker_ready"
    )
