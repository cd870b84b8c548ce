"""Open operational routes: ``/healthz`` (alive), ``/readyz`` (ready to serve), ``/metrics``."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service.api.deps import RegistryDep

log = logging.getLogger("service.api.health")

router = APIRouter(tags=["health"])

PING_TIMEOUT_S = 5.0


class Alive(BaseModel):
    status: str = "ok"


class ModelsState(BaseModel):
    started: bool = Field(description="start-up loading has finished")
    loaded: list[str] = Field(description="name:version held in memory")
    skipped: dict[str, str] = Field(description="start-up refs that failed to load, and why")


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool] = Field(description="models, database, broker")
    models: ModelsState
    errors: dict[str, str] = Field(default_factory=dict)


@router.get("/healthz", response_model=Alive, summary="Liveness: the process answers")
async def healthz() -> Alive:
    return Alive()


async def _ping(request: Request) -> tuple[dict[str, bool], dict[str, str]]:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        return {"database": False, "broker": False}, {"jobs": "jobs runtime not open"}
    try:
        result = await asyncio.wait_for(asyncio.to_thread(jobs.ping), PING_TIMEOUT_S)
    except TimeoutError:
        return {"database": False, "broker": False}, {"jobs": f"ping over {PING_TIMEOUT_S}s"}
    except Exception as exc:  # readiness reports failures, it does not raise them
        log.warning("jobs ping failed", exc_info=True)
        return {"database": False, "broker": False}, {"jobs": f"ping failed: {exc}"}
    return {str(k): bool(v) for k, v in result.items()}, {}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready; the checks say why"}},
    summary="Readiness: models loaded, job database and broker reachable",
)
async def readyz(request: Request, registry: RegistryDep) -> JSONResponse:
    checks, errors = await _ping(request)
    checks = {"models": registry.started, **checks}
    body = Readiness(
        ready=all(checks.values()),
        checks=checks,
        models=ModelsState(
            started=registry.started,
            loaded=[m.ref for m in registry.loaded()],
            skipped=registry.skipped,
        ),
        errors=errors,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    collected = request.app.state.metrics
    return Response(collected.render(), media_type=collected.content_type)
