"""Bearer-token auth with scopes (``predict``, ``explain``, ``jobs``, ``admin``).

Tokens and their scopes come from ``settings.api_tokens``; when that is empty, auth is off and
every caller holds every scope (development only). Use as a dependency::

    @router.post("/jobs", dependencies=[Depends(require_scope("jobs"))])
    def submit(...): ...

    JobsCaller = Annotated[Principal, Depends(require_scope("jobs"))]
    def submit(caller: JobsCaller): ...      # caller.token_id names the token, never its value

Health routes (``/healthz``, ``/readyz``, ``/metrics``) take no dependency and stay open.
A scope is granted only by listing it; ``admin`` does not imply the others.

FastAPI parses a JSON body before it runs any dependency, so a route with a body would answer
malformed JSON with 422 to a caller without a token. A router whose routes take a body is
declared with ``route_class=authenticated_route(scope)``: the token is checked before the body is
read, and the dependency then only names the caller.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
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
        token = credentials.credentials if credentials else None
        return _admit(request.app.state.settings, token, scope)

    dependency.__name__ = f"require_scope_{scope or 'any'}"
    return dependency


def _admit(settings: Settings, token: str | None, scope: str | None) -> Principal:
    principal = authenticate(settings, token)
    if scope is not None and scope not in principal.scopes:
        raise Forbidden(f"this token lacks the {scope!r} scope")
    return principal


def authenticated_route(scope: str | None) -> type[APIRoute]:
    """A route class that admits the caller (401/403) before FastAPI reads the request body."""
    if scope is not None and scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {ALL_SCOPES}")

    class AuthenticatedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def admitted(request: Request) -> Response:
                credentials = await _bearer(request)
                token = credentials.credentials if credentials else None
                _admit(request.app.state.settings, token, scope)
                return await handler(request)

            return admitted

    AuthenticatedRoute.__name__ = f"AuthenticatedRoute_{scope or 'any'}"
    return AuthenticatedRoute


Authenticated = Annotated[Principal, Depends(require_scope(None))]
PredictCaller = Annotated[Principal, Depends(require_scope("predict"))]
ExplainCaller = Annotated[Principal, Depends(require_scope("explain"))]
JobsCaller = Annotated[Principal, Depends(require_scope("jobs"))]
AdminCaller = Annotated[Principal, Depends(require_scope("admin"))]
