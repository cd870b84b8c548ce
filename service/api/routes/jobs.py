"""Jobs: submit training, robustness evaluations and PACS analyses; watch, cancel, fetch reports.

Submissions answer ``202`` with a job id at once (the work runs on a Celery worker); the same
``Idempotency-Key`` returns the same job (``200``). Every route needs the ``jobs`` scope.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import FileResponse, JSONResponse, Response

from service.api.auth import JobsCaller, authenticated_route
from service.api.deps import JobsDep, SettingsDep
from service.api.errors import Conflict, ErrorResponse, NotFound, Unprocessable
from service.config import Settings
from service.jobs.requests import EvaluationRequest, EvaluationTrust, PacsStudyRequest
from service.jobs.runtime import JobRuntime
from service.jobs.schemas import JobKind, JobList, JobState, JobView, SubmittedJob
from training.config import TrainingSpec

# the token is checked before the body is parsed: malformed JSON without a token is 401, not 422
router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=authenticated_route("jobs"))

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="resubmitting with the same key returns the first job instead of a new one",
    ),
]

JOB_ERRORS: dict[int | str, dict] = {
    401: {"model": ErrorResponse, "description": "missing or invalid bearer token"},
    403: {"model": ErrorResponse, "description": "the token lacks the 'jobs' scope"},
}
# A submission's 409/422/503 come from JobRuntime's errors, mapped in service.api.errors.
SUBMIT_RESPONSES: dict[int | str, dict] = {
    **JOB_ERRORS,
    200: {"model": SubmittedJob, "description": "an earlier job with this Idempotency-Key"},
    409: {"model": ErrorResponse, "description": "Idempotency-Key used for another submission"},
    422: {"model": ErrorResponse, "description": "bad spec, unknown model or attack parameters"},
    503: {"model": ErrorResponse, "description": "job queue unavailable; the job is failed"},
}


def _submitted(job: JobView, created: bool) -> JSONResponse:
    """202 and the new job, or 200 and the job an earlier submission with this key made."""
    body = SubmittedJob(job_id=job.id, state=job.state, created=created)
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=202 if created else 200,
        headers={"Location": f"/jobs/{job.id}"},
    )


JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _job(runtime: JobRuntime, job_id: str) -> JobView:
    job = runtime.get(job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


@router.post(
    "/training",
    status_code=202,
    response_model=SubmittedJob,
    responses=SUBMIT_RESPONSES,
    summary="Submit a training job (a TrainingSpec)",
)
def submit_training(
    spec: TrainingSpec, jobs: JobsDep, _: JobsCaller, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    return _submitted(*jobs.submit_training(spec, idempotency_key))


@router.post(
    "/evaluation",
    status_code=202,
    response_model=SubmittedJob,
    responses=SUBMIT_RESPONSES,
    summary="Submit a robustness evaluation (models, dataset, attacks, ε), run as shards",
)
def submit_evaluation(
    body: EvaluationRequest,
    jobs: JobsDep,
    settings: SettingsDep,
    _: JobsCaller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """With ``trust``, the job also writes a trust section (``GET /jobs/{id}/trust``); its n,
    n0, steps and restarts are held to the same ``trust_*`` limits as ``/predict`` (422)."""
    if body.trust is not None:
        _check_trust_limits(body.trust, settings)
    return _submitted(*jobs.submit_evaluation(body, idempotency_key))


def _check_trust_limits(trust: EvaluationTrust, settings: Settings) -> None:
    limits = (
        (trust.certify, trust.n, settings.trust_max_n, "n", "trust_max_n"),
        (trust.certify, trust.n0, settings.trust_max_n0, "n0", "trust_max_n0"),
        (trust.flip, trust.steps, settings.trust_max_steps, "steps", "trust_max_steps"),
        (trust.flip, trust.restarts, settings.trust_max_restarts, "restarts", "trust_max_restarts"),
    )
    for asked, value, limit, field, setting in limits:
        if asked and value > limit:
            raise Unprocessable(
                f"trust.{field} {value} is over this server's limit of {limit} ({setting})"
            )


@router.post(
    "/pacs-study",
    status_code=202,
    response_model=SubmittedJob,
    responses=SUBMIT_RESPONSES,
    summary="Analyse a study in a configured PACS (DICOMweb); the SR + SC are stored back",
)
def submit_pacs_study(
    body: PacsStudyRequest,
    jobs: JobsDep,
    _: JobsCaller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """QIDO-RS, WADO-RS, the model on each suitable image, STOW-RS of an SR and a Secondary
    Capture per image. The job's result lists every instance (analysed, or skipped and why),
    the stored objects' UIDs and the model's name, version and weights sha256."""
    return _submitted(*jobs.submit_pacs_study(body, idempotency_key))


@router.get("", response_model=JobList, responses=JOB_ERRORS, summary="List jobs, newest first")
def list_jobs(
    jobs: JobsDep,
    _: JobsCaller,
    state: JobState | None = None,
    kind: JobKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> JobList:
    views, total = jobs.list(state, kind, limit, offset)
    return JobList(jobs=views, total=total)


@router.get(
    "/{job_id}",
    response_model=JobView,
    responses={**JOB_ERRORS, 404: {"model": ErrorResponse, "description": "unknown job"}},
    summary="A job: state, progress, epoch/batch, metrics so far, timestamps, error, result",
)
def get_job(job_id: str, jobs: JobsDep, _: JobsCaller) -> JobView:
    return _job(jobs, job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=JobView,
    responses={
        **JOB_ERRORS,
        404: {"model": ErrorResponse, "description": "unknown job"},
        409: {"model": ErrorResponse, "description": "the job has already finished"},
    },
    summary="Cancel: a queued job at once, a running one at its next batch",
)
def cancel_job(job_id: str, jobs: JobsDep, _: JobsCaller) -> JobView:
    job = jobs.cancel(job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    if job.state in (JobState.succeeded, JobState.failed):
        raise Conflict(f"job {job_id} has already {job.state.value}")
    return job


REPORT_RESPONSES: dict[int | str, dict] = {
    **JOB_ERRORS,
    404: {"model": ErrorResponse, "description": "unknown job, or not an evaluation"},
    409: {"model": ErrorResponse, "description": "the evaluation has not succeeded (yet)"},
}


def _report(runtime: JobRuntime, job_id: str, name: str, media_type: str) -> FileResponse:
    job = _job(runtime, job_id)
    if name.startswith("trust") and not (job.spec or {}).get("trust"):
        raise NotFound(f"job {job_id} has no trust section: submit the evaluation with trust")
    if job.kind != JobKind.evaluation:
        raise NotFound(f"job {job_id} is a {job.kind.value} job; only evaluations have reports")
    if job.state != JobState.succeeded:
        raise Conflict(
            f"job {job_id} is {job.state.value}; its report exists once it has succeeded"
        )
    path = runtime.report_file(job_id, name)
    if not path.is_file():
        raise NotFound(f"the report file {name} of job {job_id} is missing")
    return FileResponse(path, media_type=media_type)


@router.get(
    "/{job_id}/report",
    responses={**REPORT_RESPONSES, 200: {"content": {"application/json": {}}}},
    response_class=Response,
    summary="The evaluation's robustness report (JSON: a RobustnessReport)",
)
def get_report(job_id: str, jobs: JobsDep, _: JobsCaller) -> FileResponse:
    return _report(jobs, job_id, "report.json", "application/json")


@router.get(
    "/{job_id}/report.png",
    responses={**REPORT_RESPONSES, 200: {"content": {"image/png": {}}}},
    response_class=Response,
    summary="Robust accuracy vs ε, one panel per attack (PNG)",
)
def get_report_png(job_id: str, jobs: JobsDep, _: JobsCaller) -> FileResponse:
    return _report(jobs, job_id, "report.png", "image/png")


@router.get(
    "/{job_id}/report.md",
    responses={**REPORT_RESPONSES, 200: {"content": {"text/markdown": {}}}},
    response_class=Response,
    summary="The report as a markdown table",
)
def get_report_markdown(job_id: str, jobs: JobsDep, _: JobsCaller) -> FileResponse:
    return _report(jobs, job_id, "report.md", "text/markdown; charset=utf-8")


@router.get(
    "/{job_id}/trust",
    responses={**REPORT_RESPONSES, 200: {"content": {"application/json": {}}}},
    response_class=Response,
    summary="The evaluation's trust section (JSON: a versioned TrustReport)",
)
def get_trust(job_id: str, jobs: JobsDep, _: JobsCaller) -> FileResponse:
    return _report(jobs, job_id, "trust.json", "application/json")


@router.get(
    "/{job_id}/trust.md",
    responses={**REPORT_RESPONSES, 200: {"content": {"text/markdown": {}}}},
    response_class=Response,
    summary="The trust section as a markdown table",
)
def get_trust_markdown(job_id: str, jobs: JobsDep, _: JobsCaller) -> FileResponse:
    return _report(jobs, job_id, "trust.md", "text/markdown; charset=utf-8")


@router.get(
    "/{job_id}/trust/certified.png",
    responses={**REPORT_RESPONSES, 200: {"content": {"image/png": {}}}},
    response_class=Response,
    summary="Certified accuracy vs L2 radius, every model (PNG; with trust.certify)",
)
def get_trust_certified_png(job_id: str, jobs: JobsDep, _: JobsCaller) -> FileResponse:
    return _report(jobs, job_id, "trust_certified.png", "image/png")


@router.get(
    "/{job_id}/trust/flip.png",
    responses={**REPORT_RESPONSES, 200: {"content": {"image/png": {}}}},
    response_class=Response,
    summary="Fraction of images flipped below each L∞ ε, every model (PNG; with trust.flip)",
)
def get_trust_flip_png(job_id: str, jobs: JobsDep, _: JobsCaller) -> FileResponse:
    return _report(jobs, job_id, "trust_flip.png", "image/png")
