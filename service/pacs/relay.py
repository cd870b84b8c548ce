"""Instances received by the DIMSE listener → the model → SR + SC sent on by C-STORE.

The DIMSE twin of :func:`service.pacs.dicomweb.analyze_study`: the same per-instance analysis
and the same summary, but the images come from spooled files and the results go to the
configured destination node. Results are sent after each image, so a failure part-way keeps
what was already delivered; a destination that refuses fails the job (every later image would
fail the same way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.pacs.analysis import analyze_dataset
from service.pacs.dimse import send_datasets
from service.pacs.summary import AnalysisSummary, InstanceOutcome, analysed
from training.dicom import DicomInputError, read_dicom

if TYPE_CHECKING:
    from service.jobs.requests import DimseRequest
    from service.pacs.trust import PacsTrust
    from training.store import LoadedModel

log = logging.getLogger(__name__)


class RelaySummary(AnalysisSummary):
    """What a DIMSE job did: the instances received, and where their results went."""

    source_aet: str | None
    destination: str


def analyze_and_send(
    request: DimseRequest,
    loaded: LoadedModel,
    timeout_s: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    trust: PacsTrust | None = None,
) -> RelaySummary:
    """Analyse every spooled file of ``request`` and C-STORE each image's SR + SC.

    ``trust``: the plan for ``request.robustness`` (:func:`service.pacs.trust.pacs_trust`).
    """
    outcomes = []
    for done, path in enumerate(request.files, start=1):
        outcomes.append(_relay_one(Path(path), request, loaded, timeout_s, trust))
        if progress is not None:
            progress(done, len(request.files))
    summary = RelaySummary.build(
        loaded.manifest,
        request.method,
        outcomes,
        source_aet=request.source_aet,
        destination=str(request.destination),
        robustness=request.robustness,
        robustness_skipped=None if trust is None else trust.skipped,
    )
    log.info(
        "DIMSE job: %d instance(s) from %s, %d analysed, %d skipped, results to %s",
        summary.seen,
        request.source_aet,
        summary.analysed,
        summary.skipped,
        request.destination,
    )
    return summary


def _relay_one(
    path: Path,
    request: DimseRequest,
    loaded: LoadedModel,
    timeout_s: float,
    trust: PacsTrust | None,
) -> InstanceOutcome:
    identity: dict[str, Any] = {"sop_instance_uid": path.stem, "series_instance_uid": ""}
    try:
        source = read_dicom(path)
        identity = {
            "sop_instance_uid": str(source.get("SOPInstanceUID", path.stem)),
            "series_instance_uid": str(source.get("SeriesInstanceUID", "")),
            "modality": source.get("Modality"),
        }
        results = analyze_dataset(source, loaded, request.method, trust=trust)
    except DicomInputError as exc:
        return InstanceOutcome(**identity, status="skipped", reason=str(exc))
    send_datasets(
        [results.sr, results.sc], request.destination, request.ae_title, timeout_s=timeout_s
    )
    return analysed(InstanceOutcome(**identity, status="skipped"), results)
