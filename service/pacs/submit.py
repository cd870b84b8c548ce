"""Queue the analysis of instances the DIMSE listener received (called by the listener process).

Light on purpose: it imports neither Keras/TensorFlow nor pynetdicom, nor the worker (the job
is sent by task name through :mod:`service.jobs.dispatch`), so the listener stays small
(tests/structure/test_import_weight.py checks it). The destination, model and method come from
the listener's settings and are written into the job (the model pinned to its version), so the
job record says exactly what ran and where the results went.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from service.config import Settings
from service.dicom_node import DicomNode
from service.jobs.errors import JobSpecError
from service.jobs.requests import DimseRequest
from service.jobs.runtime import JobRuntime


def dimse_request(
    settings: Settings, spooled_paths: Sequence[Path], calling_aet: str | None = None
) -> DimseRequest:
    """The job request for ``spooled_paths``; :class:`JobSpecError` if the settings lack a
    destination or a model."""
    if not settings.dimse_destination_ae or settings.dimse_destination_port is None:
        raise JobSpecError(
            "no DIMSE destination configured: set MEDROBUST_DIMSE_DESTINATION_AE, "
            "MEDROBUST_DIMSE_DESTINATION_HOST and MEDROBUST_DIMSE_DESTINATION_PORT"
        )
    if not settings.dimse_model:
        raise JobSpecError("no model configured for received images: set MEDROBUST_DIMSE_MODEL")
    try:
        return DimseRequest(
            files=[str(Path(p).resolve()) for p in spooled_paths],
            source_aet=calling_aet,
            ae_title=settings.dimse_ae_title,
            destination=DicomNode(
                aet=settings.dimse_destination_ae,
                host=settings.dimse_destination_host,
                port=settings.dimse_destination_port,
            ),
            model=settings.dimse_model,
            method=settings.dimse_explain_method,
            robustness=settings.dimse_robustness,
        )
    except ValidationError as exc:
        raise JobSpecError(f"bad DIMSE job settings or request: {exc}") from exc


def submit_dimse_job(
    settings: Settings,
    spooled_paths: Sequence[Path],
    *,
    calling_aet: str | None = None,
    runtime: JobRuntime | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Record and queue one job for ``spooled_paths``; returns its id.

    Pass a ``runtime`` (``JobRuntime(settings, sweep=False)``) opened once by the caller to
    reuse its database and broker connections; without one a runtime is opened and closed here.
    Raises :class:`JobSpecError` (settings incomplete, unknown model, missing file) and
    :class:`service.jobs.runtime.EnqueueError` (broker down: the job is recorded as failed).
    """
    request = dimse_request(settings, spooled_paths, calling_aet)
    own = runtime is None
    runtime = runtime or JobRuntime(settings, sweep=False)
    try:
        job, _ = runtime.submit_pacs_dimse(request, idempotency_key)
    finally:
        if own:
            runtime.close()
    return job.id
