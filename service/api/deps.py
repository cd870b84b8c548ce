"""Shared ``Annotated`` dependencies: the app's settings, model registry, job runtime and path
policy, and how a request's models are chosen."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import NotFound, ServiceUnavailable, Unprocessable
from service.api.models_registry import ModelRegistry
from service.api.params import ModelSelection
from service.config import Settings
from service.jobs.paths import PathPolicy
from service.jobs.runtime import JobRuntime
from training.task_defaults import TaskDefaultsFileError


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


async def _paths(request: Request) -> PathPolicy:
    """The app's path policy, built on first use and kept: building it resolves every root on
    disk, and the roots come from settings that do not change while the app runs (the job
    runtime and the worker keep theirs just as long). Async, so on the event loop: no two
    requests build it at once."""
    state = request.app.state
    policy: PathPolicy | None = getattr(state, "path_policy", None)
    if policy is None:
        policy = state.path_policy = PathPolicy.from_settings(state.settings)
    return policy


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
JobsDep = Annotated[JobRuntime, Depends(_jobs)]
PathsDep = Annotated[PathPolicy, Depends(_paths)]


def _task_defaults(registry: ModelRegistry, task: str) -> dict[str, str]:
    """The task defaults a request for ``task`` resolves against. With the store's file
    unreadable, the configured ones still answer for the tasks they name (the file could not
    have overridden them); any other task gets the file's error, a 503 saying how to fix it."""
    try:
        return registry.task_defaults()
    except TaskDefaultsFileError:
        if task in registry.settings.default_models:
            return dict(registry.settings.default_models)
        raise


def selected_refs(selection: ModelSelection, registry: ModelRegistry) -> list[str]:
    """The refs a request asks for: its ``models``, else its ``task``'s default model (the
    store's task defaults under the configured ones), else the ``default`` task's model."""
    if selection.models:
        return list(selection.models)  # the store's task defaults file is never read
    defaults = _task_defaults(registry, selection.task or "default")
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
