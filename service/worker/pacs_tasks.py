"""The PACS job tasks: a study over DICOMweb, or the instances the DIMSE listener received.

Same contract as the other job tasks (:mod:`service.worker.common`): the task gets a job id,
claims the job, runs, and records the outcome. Unsuitable instances are skipped inside the run
(listed in the result); a PACS or DICOM node that cannot be reached, an unknown study or a model
that fails ends the job ``failed`` with the reason, never a lost or forever-running job. A
redelivered job simply runs again: the result objects' UIDs are deterministic, so the PACS keeps
one copy of each.

The listener's spooled files hold patient data: they are deleted when their job ends (succeeded,
failed or cancelled); a sender must resend after a failure.

The probabilities in each SR come from the serving runtime ``MEDROBUST_SERVE_RUNTIME`` names, as
``/predict``'s do: derived, gated against Keras fp32 and cached once per worker process
(``training.runtimes``), Keras fp32 with a logged reason when it does not pass. The job's result
names the runtime that ran (``runtime``, ``runtime_artefact_sha256``, and ``runtime_requested``
after a fallback). Grad-CAM and robustness stay in Keras.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Task

from service.jobs.repository import Claim, ClaimOutcome, this_holder
from service.jobs.requests import DimseRequest, PacsStudyRequest
from service.jobs.schemas import TERMINAL_STATES, JobState, JobView
from service.worker.common import Stopped, claimed, json_safe, run_job, validated_request
from service.worker.context import WorkerContext, worker_context
from service.worker.progress import Heartbeat, Throttle

if TYPE_CHECKING:
    from training.runtimes import ServingCache, ServingModel

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def _run(
    ctx: WorkerContext, job: JobView, work: Callable[[Progress], dict[str, Any]], what: str
) -> JobState | None:
    """Run ``work(progress)`` (:func:`run_job`) and record its summary (JSON) as the result.

    Returns the job's final state, or None when the job ended elsewhere (nothing recorded).
    """
    repo, options = ctx.repo, ctx.options

    def run(heartbeat: Heartbeat) -> dict[str, Any]:
        throttle = Throttle(options.progress_interval_s)

        def progress(done: int, total: int) -> None:
            heartbeat.check()  # between instances: cooperative cancellation
            values = {
                "progress": min(99.0, 100.0 * done / max(total, 1)),
                "metrics": {"instances_done": done, "instances": total},
            }
            throttle(lambda: repo.update_progress(job.id, **values), force=done == total)

        return work(progress)

    summary = run_job(ctx, job, f"{what} job {job.id}", run)
    if isinstance(summary, Stopped):
        return summary.state
    repo.finish(job.id, JobState.succeeded, result=json_safe(summary))
    return JobState.succeeded


def _load(ctx: WorkerContext, ref: str) -> ServingModel:
    """The model ``ref`` names, served by the configured runtime (see the module docstring)."""
    from training.model_ref import ModelRef

    parsed = ModelRef.parse(ref)
    loaded = ctx.models.load(parsed.name, parsed.selector)
    directory = ctx.store.root / loaded.manifest.name / str(loaded.manifest.version)
    cache = _serving_cache(os.getpid(), ctx.models.capacity)
    return cache.get(loaded, ctx.settings.serve_runtime, directory)


@functools.cache
def _serving_cache(pid: int, capacity: int) -> ServingCache:
    """This process's served models, made after the fork (keyed by pid) like its context."""
    from training.runtimes import ServingCache

    return ServingCache(capacity)


# ---- DICOMweb ---------------------------------------------------------------------------------


def run_pacs_study(ctx: WorkerContext, job: JobView) -> JobState | None:
    from service.pacs.dicomweb import analyze_study, dicomweb_client
    from service.pacs.trust import pacs_trust
    from training.runtimes import runtime_summary

    request: PacsStudyRequest | None = validated_request(ctx, job, PacsStudyRequest)
    if request is None:
        return JobState.failed
    settings = ctx.settings
    url = settings.pacs_dicomweb.get(request.pacs)
    if url is None:
        error = (
            f"the PACS {request.pacs!r} is not configured on this worker (MEDROBUST_PACS_DICOMWEB)"
        )
        ctx.repo.finish(job.id, JobState.failed, error=error)
        return JobState.failed

    def work(progress: Progress) -> dict[str, Any]:
        loaded = _load(ctx, request.model)
        summary = analyze_study(
            dicomweb_client(url, settings.pacs_timeout_s),
            request.study_uid,
            loaded,
            request.method,
            check_modality=not request.allow_modality_mismatch,
            max_instances=settings.pacs_max_instances,
            progress=progress,
            trust=pacs_trust(loaded, request.robustness, settings),
            robustness=request.robustness,
        )
        return {"pacs": request.pacs, **summary.model_dump(mode="json"), **runtime_summary(loaded)}

    return _run(ctx, job, work, "PACS study")


def pacs_study(self: Task, job_id: str, busy_checks: int = 0) -> None:
    ctx = worker_context(self.app)
    job = claimed(self, ctx.repo.claim(job_id, this_holder()), busy_checks, f"job {job_id}")
    if job is not None:
        run_pacs_study(ctx, job)


# ---- DIMSE ------------------------------------------------------------------------------------


def run_pacs_dimse(ctx: WorkerContext, job: JobView) -> JobState | None:
    from service.pacs.relay import analyze_and_send
    from service.pacs.trust import pacs_trust
    from training.runtimes import runtime_summary

    request: DimseRequest | None = validated_request(ctx, job, DimseRequest)
    if request is None:
        return JobState.failed

    def work(progress: Progress) -> dict[str, Any]:
        loaded = _load(ctx, request.model)
        trust = pacs_trust(loaded, request.robustness, ctx.settings)
        summary = analyze_and_send(request, loaded, ctx.settings.pacs_timeout_s, progress, trust)
        return {**summary.model_dump(mode="json"), **runtime_summary(loaded)}

    state = _run(ctx, job, work, "DIMSE")
    if state is not None:  # the job ended here: the received instances are no longer needed
        _delete_spooled([Path(path) for path in request.files])
    return state


def discard_ended(claim: Claim) -> bool:
    """Delete the spooled files of a DIMSE job that ended without running here: cancelled
    while queued, or failed when its attempts ran out. Its message still arrives, and this is
    the only place that sees it again. Returns whether there was such a job."""
    job = claim.job
    if claim.outcome == ClaimOutcome.busy or job is None or job.state not in TERMINAL_STATES:
        return False
    _delete_spooled([Path(path) for path in job.spec.get("files", [])])
    return True


def _delete_spooled(files: list[Path]) -> None:
    """Delete the files, then their folders (the listener spools one per association) if empty."""
    for path in files:
        path.unlink(missing_ok=True)
    for folder in {path.parent for path in files}:
        with contextlib.suppress(OSError):  # not empty: another job's files are still there
            folder.rmdir()


def pacs_dimse(self: Task, job_id: str, busy_checks: int = 0) -> None:
    ctx = worker_context(self.app)
    claim = ctx.repo.claim(job_id, this_holder())
    job = claimed(self, claim, busy_checks, f"job {job_id}")
    if job is not None:
        run_pacs_dimse(ctx, job)
    else:
        discard_ended(claim)
