"""Shared ``Annotated`` dependencies: the app's settings and model registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import NotFound, Unprocessable
from service.api.inputs import ModelSelection
from service.api.models_registry import ModelRegistry
from service.config import Settings


# async (though they await nothing): FastAPI runs sync dependencies in a thread pool, a needless
# thread hop per request on the hot path.
async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.models


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]


def selected_refs(selection: ModelSelection, settings: Settings) -> list[str]:
    """The refs a request asks for: its ``models``, else its ``task``'s configured default,
    else the ``default`` task's model if one is configured."""
    if selection.models:
        return list(selection.models)
    defaults = settings.default_models
    tasks = ", ".join(sorted(defaults)) or "none"
    if selection.task is not None:
        if selection.task not in defaults:
            raise NotFound(f"no default model for task {selection.task!r} (configured: {tasks})")
        return [defaults[selection.task]]
    if "default" in defaults:
        return [defaults["default"]]
    raise Unprocessable(
        f"name the model(s) with 'models' (e.g. ['derm:production']) or a 'task' "
        f"(configured tasks: {tasks})"
    )
