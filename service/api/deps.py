"""Shared ``Annotated`` dependencies: the app's settings, model registry and job runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import NotFound, ServiceUnavailable, Unprocessable
from service.api.models_registry import ModelRegistry
from service.api.params import ModelSelection
from service.config import Settings
from service.jobs.runtime import JobRuntime


# async (though they await nothing): FastAPI runs sync dependencies in a thread pool, a needless
# thread hop per request on the hot path.
async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.models


async def _jobs(request: Request) -> JobRuntime:
    """The runtime the lifespan opened; 503 outside it (start-up failed, or shutting down)."""
    runtime = request.app.state.jobs
    if runtime is None:
        raise ServiceUnavailable("the job runtime is not open")
    return runtime


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
JobsDep = Annotated[JobRuntime, Depends(_jobs)]


def selected_refs(selection: ModelSelection, registry: ModelRegistry) -> list[str]:
    """The refs a request asks for: its ``models``, else its ``task``'s default model (the
    store's task defaults under the configured ones), else the ``default`` task's model."""
    if selection.models:
        return list(selection.models)
    defaults = registry.task_defaults()
    tasks = ", ".join(sorted(defaults)) or "none"
    if selection.task is not None:
        if selection.task not in defaults:
            raise NotFound(
                registry.with_hint(
                    f"no default model for task {selection.task!r} (configured: {tasks})"
                )
            )
        return [defaults[selection.task]]
    if "default" in defaults:
        return [defaults["default"]]
    raise Unprocessable(
        registry.with_hint(
            f"name the model(s) with 'models' (e.g. ['derm:production']) or a 'task' "
            f"(configured tasks: {tasks})"
        )
    )
