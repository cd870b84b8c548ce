"""Jobs: submit training, robustness evaluations and PACS analyses; watch, cancel, fetch reports.

Submissions answer ``202`` with a job id at once (the work runs on a Celery worker); the same
``Idempotency-Key`` returns the same job (``200``). Every route needs the ``jobs`` scope.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from service.api.auth import JobsCaller
from service.api.errors import ApiError, ErrorResponse, NotFound, Unprocessable
from service.jobs.requests import EvaluationRequest, PacsStudyRequest
from service.jobs.runtime import EnqueueError, IdempotencyConflict, JobRuntime, JobSpecError
from service.jobs.schemas import JobKind, JobList, JobState, JobView, SubmittedJob
from training.config import TrainingSpec

router = APIRouter(prefix="/jobs", tags=["jobs"])

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
SUBMIT_RESPONSES: dict[int | str, dict] = {
    **JOB_ERRORS,
    200: {"model": SubmittedJob, "description": "an earlier job with this Idempotency-Key"},
    409: {"model": ErrorResponse, "description": "Idempotency-Key used for another submission"},
    422: {"model": ErrorResponse, "description": "bad spec, unknown model or attack parameters"},
    503: {"model": ErrorResponse, "description": "job queue unavailable; the job is failed"},
}


def _runtime(request: Request) -> JobRuntime:
    runtime = getattr(request.app.state, "jobs", None)
    if runtime is None:
        raise ApiError("the job runtime is not open", status_code=503)
    return runtime


def _submitted(submit: object, *args: object) -> JSONResponse:
    try:
        job, created = submit(*args)  # type: ignore[operator]
    except JobSpecError as exc:
        raise Unprocessable(str(exc)) from exc
    except IdempotencyConflict as exc:
        raise ApiError(str(exc), status_code=409) from exc
    except EnqueueError as exc:
        raise ApiError(
            {"message": str(exc), "job_id": exc.job.id, "state": exc.job.state.value},
            status_code=503,
        ) from exc
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
    spec: TrainingSpec, request: Request, _: JobsCaller, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    return _submitted(_runtime(request).submit_training, spec, idempotency_key)


@router.post(
    "/evaluation",
    status_code=202,
    response_model=SubmittedJob,
    responses=SUBMIT_RESPONSES,
    summary="Submit a robustness evaluation (models, dataset, attacks, ε), run as shards",
)
def submit_evaluation(
    body: EvaluationRequest,
    request: Request,
    _: JobsCaller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return _submitted(_runtime(request).submit_evaluation, body, idempotency_key)


@router.post(
    "/pacs-study",
    status_code=202,
    response_model=SubmittedJob,
    responses=SUBMIT_RESPONSES,
    summary="Analyse a study in a configured PACS (DICOMweb); the SR + SC are stored back",
)
def submit_pacs_study(
    body: PacsStudyRequest,
    request: Request,
    _: JobsCaller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """QIDO-RS, WADO-RS, the model on each suitable image, STOW-RS of an SR and a Secondary
    Capture per image. The job's result lists every instance (analysed, or skipped and why),
    the stored objects' UIDs and the model's name, version and weights sha256."""
    return _submitted(_runtime(request).submit_pacs_study, body, idempotency_key)


@router.get("", response_model=JobList, responses=JOB_ERRORS, summary="List jobs, newest first")
def list_jobs(
    request: Request,
    _: JobsCaller,
    state: JobState | None = None,
    kind: JobKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> JobList:
    jobs, total = _runtime(request).list(state, kind, limit, offset)
    return JobList(jobs=jobs, total=total)


@router.get(
    "/{job_id}",
    response_model=JobView,
    responses={**JOB_ERRORS, 404: {"model": ErrorResponse, "description": "unknown job"}},
    summary="A job: state, progress, epoch/batch, metrics so far, timestamps, error, result",
)
def get_job(job_id: str, request: Request, _: JobsCaller) -> JobView:
    return _job(_runtime(request), job_id)


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
def cancel_job(job_id: str, request: Request, _: JobsCaller) -> JobView:
    runtime = _runtime(request)
    job = runtime.cancel(job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    if job.state in (JobState.succeeded, JobState.failed):
        raise ApiError(f"job {job_id} has already {job.state.value}", status_code=409)
    return job


REPORT_RESPONSES: dict[int | str, dict] = {
    **JOB_ERRORS,
    404: {"model": ErrorResponse, "description": "unknown job, or not an evaluation"},
    409: {"model": ErrorResponse, "description": "the evaluation has not succeeded (yet)"},
}


def _report(request: Request, job_id: str, name: str, media_type: str) -> FileResponse:
    runtime = _runtime(request)
    job = _job(runtime, job_id)
    if job.kind != JobKind.evaluation:
        raise NotFound(f"job {job_id} is a {job.kind.value} job; only evaluations have reports")
    if job.state != JobState.succeeded:
        raise ApiError(
            f"job {job_id} is {job.state.value}; its report exists once it has succeeded",
            status_code=409,
        )
    path = runtime.report_file(job_id, name)
    if not path.is_file():
        raise NotFound(f"the report file {name} of job {job_id} is missing")
    return FileResponse(path, media_type=media_type)


@router.get(
    "/{job_id}/report",
    responses={**REPORT_RESPONSES, 200: {"content": {"application/json": {}}}},
    response_class=Response,
    summary="The evaluation's robustness report (JSON, training.robustness.RobustnessReport)",
)
def get_report(job_id: str, request: Request, _: JobsCaller) -> FileResponse:
    return _report(request, job_id, "report.json", "application/json")


@router.get(
    "/{job_id}/report.png",
    responses={**REPORT_RESPONSES, 200: {"content": {"image/png": {}}}},
    response_class=Response,
    summary="Robust accuracy vs ε, one panel per attack (PNG)",
)
def get_report_png(job_id: str, request: Request, _: JobsCaller) -> FileResponse:
    return _report(request, job_id, "report.png", "image/png")


@router.get(
    "/{job_id}/report.md",
    responses={**REPORT_RESPONSES, 200: {"content": {"text/markdown": {}}}},
    response_class=Response,
    summary="The report as a markdown table",
)
def get_report_markdown(job_id: str, request: Request, _: JobsCaller) -> FileResponse:
    return _report(request, job_id, "report.md", "text/markdown; charset=utf-8")
