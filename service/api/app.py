"""The FastAPI application: ``create_app(settings)`` and its lifespan.

Run it with uvicorn's factory mode (settings from ``MEDROBUST_*`` env vars / ``.env``)::

    uvicorn 'service.api.app:create_app' --factory --host 127.0.0.1 --port 8000

Importing this module loads no model and opens nothing. The lifespan, once per process, loads the
start-up models (each verified and warmed up, behind its own micro-batcher) and opens the jobs
runtime (job database + broker); shutdown stops the batchers and closes the runtime.
OpenAPI docs: ``/docs`` (Swagger UI) and ``/redoc``, whose scripts, styles and icon are served
from the ``fastapi-offline`` package under ``/static-offline-docs``, never from a CDN, so they
load inside a hospital network without internet; the schema: ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

import training
from service import web
from service.api.body_timeout import BodyReadTimeoutMiddleware
from service.api.decoding import DecodePool
from service.api.errors import install_error_handlers
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.models_registry import ModelRegistry
from service.api.routes import explain, health, models, predict, render
from service.api.routes import jobs as jobs_routes
from service.api.trust import TrustPool
from service.config import Settings, get_settings
from service.jobs.runtime import JobRuntime
from training.store import ModelStore

log = logging.getLogger("service.api")

DESCRIPTION = """\
Serve the ResNet-50 classifiers (baseline and soft-attention) from the model store: predict,
explain (Grad-CAM, attention maps, clean vs adversarial), manage model aliases and jobs.

Auth: `Authorization: Bearer <token>`; tokens and their scopes (`predict`, `explain`, `jobs`,
`admin`) come from `MEDROBUST_API_TOKENS`. `/healthz`, `/readyz`, `/readyz/jobs` and `/metrics`
are open.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` defaults to the process's (environment) settings."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(ModelStore(settings.store_dir), settings, metrics)
        app.state.models = registry
        app.state.decoder = DecodePool.from_settings(settings)
        app.state.trust = TrustPool.from_settings(settings)
        try:
            await registry.start()
            app.state.jobs = await asyncio.to_thread(JobRuntime.open, settings)
            loaded = ", ".join(m.ref for m in registry.loaded()) or "none"
            log.info("medrobust API ready: models %s; store %s", loaded, settings.store_dir)
            yield
        finally:
            await registry.close()
            await asyncio.to_thread(app.state.decoder.close)
            await asyncio.to_thread(app.state.trust.close)
            jobs = getattr(app.state, "jobs", None)
            if jobs is not None:
                await asyncio.to_thread(jobs.close)
                app.state.jobs = None

    app = FastAPIOffline(
        title="medrobust",
        version=training.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.jobs = None
    metrics.watch_jobs(lambda: app.state.jobs)
    install_error_handlers(app)
    app.add_middleware(BodyReadTimeoutMiddleware, timeout_s=settings.body_read_timeout_s)
    # Added last, so outermost: it records every answer's status, 408 and 499 included.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(render.router)  # /render: the image as decoded, for the viewer
    app.include_router(models.router)
    app.include_router(jobs_routes.router)
    app.include_router(web.router)  # the viewer at /ui/ (service/web), /session and /pacs
    return app
