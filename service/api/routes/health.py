"""Open operational routes, shaped for Kubernetes-style probes, and ``/metrics``.

- ``/healthz`` (liveness): the process answers. Restart the container only when this fails.
- ``/readyz`` (serving readiness): the start-up models are loaded, so ``/predict`` and
  ``/explain`` can answer. A broker or database outage does not make it fail: an instance that
  can still serve predictions stays in the load balancer.
- ``/readyz/jobs`` (job-submission health): the job database and the broker answer, so
  ``POST /jobs/...`` can queue work. For alerts, or for routing job submissions only.

Both readiness routes report every check. The database and broker checks run on the jobs
runtime's own small pool (:class:`service.jobs.bounded.CachedChecks`), never on the pool that
decodes images, with a short timeout and a brief cache, so a hung dependency delays a probe by at
most ``MEDROBUST_DEPENDENCY_CHECK_TIMEOUT_S`` and exhausts nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service.api.deps import RegistryDep
from service.api.models_registry import ModelRegistry
from service.jobs.bounded import Outcome

router = APIRouter(tags=["health"])

DEPENDENCIES = ("database", "broker")
SERVING = ("models",)


class Alive(BaseModel):
    status: str = "ok"


class ModelsState(BaseModel):
    started: bool = Field(description="start-up loading has finished")
    loaded: list[str] = Field(description="name:version held in memory")
    skipped: dict[str, str] = Field(description="start-up refs that failed to load, and why")


class Readiness(BaseModel):
    ready: bool = Field(description="every check this probe requires passed")
    requires: list[str] = Field(description="the checks that decide this probe's status")
    checks: dict[str, bool] = Field(description="models, database, broker")
    models: ModelsState
    errors: dict[str, str] = Field(default_factory=dict, description="why a check failed")


@router.get("/healthz", response_model=Alive, summary="Liveness: the process answers")
async def healthz() -> Alive:
    return Alive()


async def _dependencies(request: Request) -> tuple[dict[str, bool], dict[str, str]]:
    """Database and broker: whether each answered ``True`` in time, and why not."""
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        not_open = dict.fromkeys(DEPENDENCIES, "jobs runtime not open")
        return dict.fromkeys(DEPENDENCIES, False), not_open
    outcomes: dict[str, Outcome] = await jobs.checks.agather(DEPENDENCIES)
    checks = {name: outcome.ok and outcome.value is True for name, outcome in outcomes.items()}
    errors = {
        name: outcome.error or "not reachable"
        for name, outcome in outcomes.items()
        if not checks[name]
    }
    return checks, errors


async def _readiness(
    request: Request, registry: ModelRegistry, requires: tuple[str, ...]
) -> JSONResponse:
    checks, errors = await _dependencies(request)
    checks = {"models": registry.started, **checks}
    if not registry.started:
        errors["models"] = "start-up loading has not finished"
    body = Readiness(
        ready=all(checks[name] for name in requires),
        requires=list(requires),
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
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "models not loaded yet"}},
    summary="Serving readiness: start-up models loaded (job backends reported, not required)",
)
async def readyz(request: Request, registry: RegistryDep) -> JSONResponse:
    return await _readiness(request, registry, SERVING)


@router.get(
    "/readyz/jobs",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "job database or broker unreachable"}},
    summary="Job-submission health: the job database and the broker answer",
)
async def readyz_jobs(request: Request, registry: RegistryDep) -> JSONResponse:
    return await _readiness(request, registry, DEPENDENCIES)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics (job gauges as the bounded dependency checks last saw them)",
)
def metrics(request: Request) -> Response:
    collected = request.app.state.metrics
    return Response(collected.render(), media_type=collected.content_type)
