"""Bearer-token auth with scopes (``predict``, ``explain``, ``jobs``, ``admin``).

Tokens and their scopes come from ``settings.api_tokens``; when that is empty, auth is off and
every caller holds every scope (development only). Use as a dependency::

    @router.post("/jobs", dependencies=[Depends(require_scope("jobs"))])
    def submit(...): ...

    JobsCaller = Annotated[Principal, Depends(require_scope("jobs"))]
    def submit(caller: JobsCaller): ...      # caller.token_id names the token, never its value

Health routes (``/healthz``, ``/readyz``, ``/metrics``) take no dependency and stay open.
A scope is granted only by listing it; ``admin`` does not imply the others.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import Forbidden, Unauthorized
from service.config import ALL_SCOPES, Settings

_bearer = HTTPBearer(auto_error=False, description="an API token from MEDROBUST_API_TOKENS")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a short fingerprint of the token (safe to log or store) and its scopes."""

    token_id: str
    scopes: frozenset[str]


ANONYMOUS = Principal(token_id="anonymous", scopes=frozenset(ALL_SCOPES))


def token_id(token: str) -> str:
    """A stable, non-reversible name for a token (first 12 hex digits of its sha256)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def authenticate(settings: Settings, token: str | None) -> Principal:
    """The principal holding ``token``; raises 401 when auth is on and the token is unknown."""
    if not settings.api_tokens:
        return ANONYMOUS
    if not token:
        raise Unauthorized("missing bearer token (send 'Authorization: Bearer <token>')")
    scopes: list[str] | None = None
    for known, granted in settings.api_tokens.items():  # constant time per comparison
        if hmac.compare_digest(known.encode(), token.encode()):
            scopes = granted
    if scopes is None:
        raise Unauthorized("invalid bearer token")
    return Principal(token_id=token_id(token), scopes=frozenset(scopes))


def require_scope(scope: str | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a caller whose token grants ``scope`` (any valid token if None).

    401 without a valid token, 403 when the token lacks the scope.
    """
    if scope is not None and scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {ALL_SCOPES}")

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        settings: Settings = request.app.state.settings
        principal = authenticate(settings, credentials.credentials if credentials else None)
        if scope is not None and scope not in principal.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope")
        return principal

    dependency.__name__ = f"require_scope_{scope or 'any'}"
    return dependency


Authenticated = Annotated[Principal, Depends(require_scope(None))]
PredictCaller = Annotated[Principal, Depends(require_scope("predict"))]
ExplainCaller = Annotated[Principal, Depends(require_scope("explain"))]
JobsCaller = Annotated[Principal, Depends(require_scope("jobs"))]
AdminCaller = Annotated[Principal, Depends(require_scope("admin"))]
