"""The models this process serves: loaded once, held in memory, each behind its micro-batcher.

At start-up (the app's lifespan) the registry loads ``settings.preload_models`` (``NAME`` or
``NAME:SELECTOR``), or, when that is empty, the latest version of every stored model plus the
versions the configured task defaults point at; every load is verified against the manifest's
sha256 (``training.store``) and warmed up with a forward pass, so the first request does not
pay for graph tracing.

A request names a model by ref; the ref is resolved against the store on every request (a file
read), so an alias moved by ``PUT /models/{name}/aliases/{alias}`` or by the CLI takes effect on
the next request. So does a task's default model set in the store (``medrobust models default``,
``medrobust quickstart``; :mod:`training.task_defaults`), under ``settings.default_models``.
An empty store answers every lookup with a 404 that says how to get a first model. A resolved
version not yet in memory is loaded once (concurrent requests wait for the same load) and kept;
nothing is ever loaded per request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from service.api.batching import MicroBatcher
from service.api.errors import NotFound
from service.api.metrics import Metrics
from service.config import Settings
from training.model_ref import NAME_PATTERN, ModelRef
from training.runtimes import ServingForward, serving_forward
from training.store import LoadedModel, ModelManifest, ModelStore, ModelStoreError
from training.task_defaults import TaskDefaultsFileError, read_task_defaults

log = logging.getLogger("service.api.models")

EXPLAIN_CONCURRENCY = 2  # explanations (and attacks) running at once per process
#: appended to every "no such model / task" answer while the store holds no model at all
NO_MODEL_YET = "no model yet: run `make demo` (or medrobust quickstart) or POST /jobs/training"


def check_name(name: str) -> str:
    """``name`` if it can be a stored model's name, else 404 (never a path outside the store)."""
    if not NAME_PATTERN.match(name):
        raise NotFound(f"no model named {name!r}")
    return name


@dataclass
class ServedModel:
    """One loaded model version, the runtime that computes its /predict probabilities (Keras
    fp32 or one that passed its parity gate; training.runtimes) and the batcher that feeds it."""

    loaded: LoadedModel
    forward: ServingForward
    batcher: MicroBatcher = field(repr=False)

    @property
    def manifest(self) -> ModelManifest:
        return self.loaded.manifest

    @property
    def ref(self) -> str:
        return self.manifest.ref


def _load_and_warm(
    store: ModelStore, name: str, version: int, runtime: str
) -> tuple[LoadedModel, ServingForward]:
    """Load, choose the serving runtime (gated, with fallback), and warm its forward pass."""
    loaded = store.load(name, str(version))
    forward = serving_forward(loaded, runtime, store.root / name / str(version))
    size = loaded.manifest.preprocess.input_size
    for batch in (1, 2):  # the second shape lets the compiled forward pass generalise its batch
        forward(np.zeros((batch, size, size, 3), np.float32))
    return loaded, forward


class ModelRegistry:
    """Loaded models by (name, version); see the module docstring."""

    def __init__(self, store: ModelStore, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._served: dict[tuple[str, int], ServedModel] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[ServedModel]] = {}
        self.skipped: dict[str, str] = {}
        self.explain_slots = asyncio.Semaphore(EXPLAIN_CONCURRENCY)
        self.started = False

    # -- life cycle ----------------------------------------------------------------------------

    def startup_refs(self) -> tuple[list[str], bool]:
        """Refs to load at start-up and whether they were configured explicitly."""
        if self.settings.preload_models:
            return list(self.settings.preload_models), True
        try:
            defaults = self.task_defaults()
        except TaskDefaultsFileError as exc:
            # a corrupt defaults file must not stop the API: requests naming models still work,
            # and task requests answer 503 with the fix (service/api/errors.py)
            log.error("%s; starting without the store's task defaults", exc)
            defaults = dict(self.settings.default_models)
        refs = list(self.store.names()) + list(defaults.values())
        return list(dict.fromkeys(refs)), False

    async def start(self) -> None:
        """Load the start-up models; an explicitly configured one that fails stops the start."""
        refs, explicit = self.startup_refs()
        for ref in refs:
            try:
                served = await self.get(ref)
            except Exception as exc:
                if explicit:
                    raise RuntimeError(f"cannot load preloaded model {ref!r}: {exc}") from exc
                log.warning("skipping model %s at start-up: %s", ref, exc)
                self.skipped[ref] = str(exc)
            else:
                log.info("serving %s (sha256 %s)", served.ref, served.manifest.weights_sha256[:12])
        self.started = True

    async def close(self) -> None:
        for task in self._loading.values():
            task.cancel()
        for served in self._served.values():
            await served.batcher.close()
        self._served.clear()
        self.metrics.models_loaded.set(0)

    # -- lookup --------------------------------------------------------------------------------

    def loaded(self) -> list[ModelManifest]:
        return [served.manifest for served in self._served.values()]

    def task_defaults(self) -> dict[str, str]:
        """task → model ref now: the store's (read per call), then the settings' on top."""
        return {**read_task_defaults(self.store.root), **self.settings.default_models}

    def empty(self) -> bool:
        """Whether the store holds no model yet (a new install)."""
        return not self.store.names()

    def with_hint(self, message: str) -> str:
        """``message``, plus how to get a first model when the store is empty."""
        return f"{message}; {NO_MODEL_YET}" if self.empty() else message

    def resolve(self, ref: str) -> tuple[str, int]:
        """(name, version) a ref points at now (404 if none)."""
        parsed = ModelRef.parse(ref)  # ModelRefError → 404, as ModelStoreError below
        try:
            return parsed.name, self.store.resolve(parsed.name, parsed.selector)
        except ModelStoreError as exc:
            raise NotFound(self.with_hint(str(exc))) from None

    async def get(self, ref: str) -> ServedModel:
        """The served model a ref resolves to, loading that version once if needed."""
        key = self.resolve(ref)
        served = self._served.get(key)
        if served is not None:
            return served
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(*key))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, name: str, version: int) -> ServedModel:
        loaded, forward = await asyncio.to_thread(
            _load_and_warm, self.store, name, version, self.settings.serve_runtime
        )
        ref = loaded.manifest.ref
        batcher = MicroBatcher(
            forward,
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.max_batch_wait_ms / 1000.0,
            name=ref,
            observe=self.metrics.observe_batch(ref),
        )
        batcher.start()
        served = ServedModel(loaded=loaded, forward=forward, batcher=batcher)
        self._served[(name, version)] = served
        self.metrics.models_loaded.set(len(self._served))
        return served
