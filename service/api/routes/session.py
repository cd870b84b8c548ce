"""``GET /session``: who the caller is and what this server offers, for clients that adapt to it.

The web viewer asks once after a token is entered: the token's scopes decide which controls it
shows (a token without ``jobs`` sees no job forms), and the task defaults (the store's, under the
configured ones, as a request's ``"task"`` resolves them) and attacks fill its forms. A control
hidden by the viewer is still refused by the route behind it; this only spares a user buttons
that would answer 403. The answer names the token by its fingerprint, never its value.

An unreadable task defaults file in the store does not take the viewer down with it: the answer
lists the configured defaults only and says what is wrong in ``task_defaults_error`` (a request
naming only a task the file would answer gets the same words as a 503; one naming its models is
served as usual).

Without a token the route still answers 200, with no scopes and ``authenticated`` false, so a
client learns that it must ask for one without provoking an error; an invalid token is 401.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from service.api.auth import authenticate
from service.api.deps import RegistryDep, SettingsDep
from service.api.errors import ErrorResponse, unreadable_task_defaults
from service.api.models_registry import ModelRegistry
from training.attacks import available_attacks
from training.task_defaults import TaskDefaultsFileError

router = APIRouter(tags=["session"])


_bearer = HTTPBearer(auto_error=False, description="an API token from MEDROBUST_API_TOKENS")


class SessionInfo(BaseModel):
    authenticated: bool = Field(description="false: no token was sent (and auth is on)")
    token_id: str | None = Field(description="the token's fingerprint ('anonymous' with auth off)")
    scopes: list[str] = Field(description="what this token may do, sorted")
    auth_required: bool = Field(description="false: auth is off and every caller holds every scope")
    default_models: dict[str, str] = Field(description="task -> the model ref it defaults to")
    task_defaults_error: str | None = Field(
        description="why the store's task defaults are missing from default_models (its file "
        "is unreadable), and how to fix it; null when they are all there"
    )
    attacks: list[str] = Field(description="built-in attacks /explain and evaluations take")
    pacs: list[str] = Field(description="names of the configured DICOMweb PACS")


def _task_defaults(registry: ModelRegistry) -> tuple[dict[str, str], str | None]:
    """All task defaults, or, when the store's file is unreadable, the configured ones and why."""
    try:
        return registry.task_defaults(), None
    except TaskDefaultsFileError as exc:
        return dict(registry.settings.default_models), unreadable_task_defaults(exc)


@router.get(
    "/session",
    response_model=SessionInfo,
    responses={401: {"model": ErrorResponse, "description": "an invalid bearer token"}},
    summary="The caller's scopes and the server's task defaults",
)
def session(
    settings: SettingsDep,
    registry: RegistryDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> SessionInfo:
    if credentials is None and settings.api_tokens:
        return SessionInfo(
            authenticated=False,
            token_id=None,
            scopes=[],
            auth_required=True,
            default_models={},
            task_defaults_error=None,
            attacks=[],
            pacs=[],
        )
    caller = authenticate(settings, credentials.credentials if credentials else None)
    defaults, problem = _task_defaults(registry)
    return SessionInfo(
        authenticated=True,
        token_id=caller.token_id,
        scopes=sorted(caller.scopes),
        auth_required=bool(settings.api_tokens),
        default_models=defaults,
        task_defaults_error=problem,
        attacks=available_attacks(),
        pacs=sorted(settings.pacs_dicomweb),
    )
