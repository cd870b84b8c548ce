"""What a worker process holds between tasks: the job database, the model store and the models.

One :class:`WorkerContext` per pool process, opened in ``worker_process_init`` (after the fork:
database engines and TensorFlow must not cross a fork) and reused by every task that process runs.
Models are loaded once per process and kept (a small LRU keyed by name, version and sha256).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery import Celery

from service.config import Settings
from service.jobs.dispatch import Dispatcher, settings_of
from service.jobs.options import JobOptions
from service.jobs.paths import PathPolicy
from service.jobs.repository import JobRepository, open_job_database
from training.model_ref import LATEST

if TYPE_CHECKING:
    from training.store import LoadedModel, ModelStore

log = logging.getLogger(__name__)


class CachedStore:
    """A model store whose ``load`` returns the same loaded model for the same weights.

    A ``training.store.ModelLoader``, so it can be handed to
    ``training.robustness.run.evaluate_stored``. The selector is resolved on every call, so an
    alias that moves is followed; the weights are read once per (name, version, sha256).
    """

    def __init__(self, store: ModelStore, capacity: int = 4) -> None:
        self.store = store
        self.capacity = capacity
        self._models: OrderedDict[tuple[str, int, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times weights were actually read (for tests and logs)

    def load(self, name: str, selector: str = LATEST) -> LoadedModel:
        version = self.store.resolve(name, selector)
        manifest = self.store.manifest(name, str(version))
        key = (name, version, manifest.weights_sha256)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = self.store.load(name, str(version))
            self.loads += 1
            self._models[key] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            log.info("loaded model %s:%d into worker process %d", name, version, os.getpid())
            return loaded

    def __getattr__(self, name: str) -> Any:  # resolve, manifest, save ... pass through
        return getattr(self.store, name)


@dataclass
class WorkerContext:
    settings: Settings
    options: JobOptions
    paths: PathPolicy  # confines the paths a job spec names; redacts them in job errors
    repo: JobRepository
    store: ModelStore
    models: CachedStore
    dispatcher: Dispatcher
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def open(cls, app: Celery) -> WorkerContext:
        from training.store import ModelStore  # Keras: only in pool processes (after the fork)

        settings = settings_of(app)
        options, repo = open_job_database(settings)
        store = ModelStore(options.store_dir)
        paths = PathPolicy.from_settings(settings)
        return cls(settings, options, paths, repo, store, CachedStore(store), Dispatcher(app))

    def close(self) -> None:
        self.repo.dispose()


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def worker_context(app: Celery) -> WorkerContext:
    """This process's context, opened on first use (and again in a forked child)."""
    global _context
    with _context_lock:
        if _context is None or _context.pid != os.getpid():
            _context = WorkerContext.open(app)
        return _context


def close_worker_context() -> None:
    global _context
    with _context_lock:
        if _context is not None and _context.pid == os.getpid():
            _context.close()
        _context = None
