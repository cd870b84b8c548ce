"""``GET /session``: who the caller is and what this server offers, for clients that adapt to it.

The web viewer asks once after a token is entered: the token's scopes decide which controls it
shows (a token without ``jobs`` sees no job forms), and the task defaults (the store's, under the
configured ones, as a request's ``"task"`` resolves them) and attacks fill its forms. A control
hidden by the viewer is still refused by the route behind it; this only spares a user buttons
that would answer 403. The answer names the token by its fingerprint, never its value.

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
from service.api.errors import ErrorResponse
from training.attacks import available_attacks

router = APIRouter(tags=["session"])


_bearer = HTTPBearer(auto_error=False, description="an API token from MEDROBUST_API_TOKENS")


class SessionInfo(BaseModel):
    authenticated: bool = Field(description="false: no token was sent (and auth is on)")
    token_id: str | None = Field(description="the token's fingerprint ('anonymous' with auth off)")
    scopes: list[str] = Field(description="what this token may do, sorted")
    auth_required: bool = Field(description="false: auth is off and every caller holds every scope")
    default_models: dict[str, str] = Field(description="task -> the model ref it defaults to")
    attacks: list[str] = Field(description="built-in attacks /explain and evaluations take")
    pacs: list[str] = Field(description="names of the configured DICOMweb PACS")


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
            attacks=[],
            pacs=[],
        )
    caller = authenticate(settings, credentials.credentials if credentials else None)
    return SessionInfo(
        authenticated=True,
        token_id=caller.token_id,
        scopes=sorted(caller.scopes),
        auth_required=bool(settings.api_tokens),
        default_models=registry.task_defaults(),
        attacks=available_attacks(),
        pacs=sorted(settings.pacs_dicomweb),
    )
