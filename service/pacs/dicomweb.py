"""The DICOMweb round trip: a study in a PACS in, our SR + Secondary Capture back into it.

QIDO-RS lists the study's instances, WADO-RS retrieves each candidate image as it was stored (no
transcoding asked for), the model analyses it (:func:`service.pacs.analysis.analyze_dataset`),
and STOW-RS stores the two result objects right away, so an interrupted job keeps what it
finished. Instances that are not images (SR, presentation states, ...), our own earlier results,
and images the model does not accept (wrong modality or body part, undecodable) are skipped and
listed with the reason; they never fail the study.

Re-runs are idempotent: the result objects' UIDs derive from the source image and the model
(see :mod:`service.pacs.results`), so analysing a study again stores the same SOP instances and
the PACS keeps one copy of each.

Only SOP/Series/Study UIDs, modalities and model identities appear in logs and summaries; no
patient values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests
from dicomweb_client import DICOMwebClient
from pydicom import Dataset

from service.pacs.analysis import analyze_dataset
from service.pacs.results import MANUFACTURER
from service.pacs.summary import AnalysisSummary, InstanceOutcome, analysed
from training.dicom import DicomInputError

if TYPE_CHECKING:
    from service.pacs.trust import PacsTrust
    from training.store import LoadedModel

log = logging.getLogger(__name__)

#: QIDO-RS attributes we ask for (tags as DICOM JSON keys)
MODALITY, SERIES_UID, SOP_UID = "00080060", "0020000E", "00080018"
MANUFACTURER_TAG, INSTANCE_NUMBER = "00080070", "00200013"
QUERY_FIELDS = (MODALITY, SERIES_UID, MANUFACTURER_TAG, INSTANCE_NUMBER)
#: retrieve the instance in the transfer syntax it was stored in (the decoder handles compression)
AS_STORED = (("application/dicom", "*"),)
#: modalities that never carry an image to classify (other non-images are retrieved, then
#: refused by the decoder: not every PACS answers QIDO with Rows, so "no Rows" proves nothing)
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "RTPLAN", "RTSTRUCT", "REG", "SEG"})

Progress = Callable[[int, int], None]


class PacsError(RuntimeError):
    """The PACS could not be reached, refused a request, or does not hold the study."""


class StudyNotFoundError(PacsError):
    """QIDO-RS found no instance of the study."""


class StudySummary(AnalysisSummary):
    """What a round trip did to one study."""

    study_instance_uid: str


def dicomweb_client(url: str, timeout_s: float = 30.0) -> DICOMwebClient:
    """A client for one DICOMweb base URL (QIDO, WADO and STOW under the same root)."""
    return DICOMwebClient(url=url.rstrip("/"), timeout=timeout_s)


def _value(attributes: dict[str, Any], tag: str) -> Any:
    values = attributes.get(tag, {}).get("Value") or [None]
    return values[0]


def _number(attributes: dict[str, Any], tag: str) -> int:
    """An IS value as an int for sorting; 0 when absent or malformed (order is cosmetic)."""
    try:
        return int(_value(attributes, tag) or 0)
    except (TypeError, ValueError):
        return 0


def _pacs_call(what: str, client: DICOMwebClient, call: Callable[[], Any]) -> Any:
    """Run one DICOMweb request; network and HTTP failures become a :class:`PacsError`."""
    try:
        return call()
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise PacsError(f"the PACS at {client.base_url} answered HTTP {status} to {what}") from exc
    except requests.RequestException as exc:
        raise PacsError(
            f"the PACS at {client.base_url} is unreachable ({what}): {type(exc).__name__}: {exc}"
        ) from exc


def list_instances(client: DICOMwebClient, study_uid: str) -> list[dict[str, Any]]:
    """QIDO-RS: the study's instances (DICOM JSON), in series and instance order."""
    found = _pacs_call(
        f"QIDO-RS for study {study_uid}",
        client,
        lambda: client.search_for_instances(
            study_instance_uid=study_uid, fields=list(QUERY_FIELDS), get_remaining=True
        ),
    )
    if not found:
        raise StudyNotFoundError(f"the PACS at {client.base_url} holds no study {study_uid}")
    return sorted(found, key=lambda i: (str(_value(i, SERIES_UID)), _number(i, INSTANCE_NUMBER)))


def skip_reason(attributes: dict[str, Any]) -> str | None:
    """Why an instance is not worth retrieving (from its QIDO attributes), or None."""
    modality = _value(attributes, MODALITY)
    if modality in NON_IMAGE_MODALITIES:
        return f"not an image (modality {modality})"
    if _value(attributes, MANUFACTURER_TAG) == MANUFACTURER:
        return f"a {MANUFACTURER} result object, not a source image"
    return None


def store_results(client: DICOMwebClient, study_uid: str, datasets: list[Dataset]) -> None:
    """STOW-RS into the study; any object the PACS lists as failed fails the call."""
    response = _pacs_call(
        f"STOW-RS into study {study_uid}",
        client,
        lambda: client.store_instances(datasets, study_instance_uid=study_uid),
    )
    failed = getattr(response, "FailedSOPSequence", None) or []
    if failed:
        reasons = [
            f"{item.ReferencedSOPInstanceUID}: 0x{item.FailureReason:04X}" for item in failed
        ]
        raise PacsError(f"the PACS at {client.base_url} refused {len(failed)} object(s): {reasons}")


def analyze_study(
    client: DICOMwebClient,
    study_uid: str,
    loaded: LoadedModel,
    method: str = "gradcam",
    *,
    check_modality: bool = True,
    max_instances: int = 500,
    progress: Progress | None = None,
    trust: PacsTrust | None = None,
    robustness: str = "none",
) -> StudySummary:
    """Query, retrieve, analyse and store back one study; returns what happened to each instance.

    ``trust`` (from :func:`service.pacs.trust.pacs_trust` for the job's ``robustness``) adds
    each prediction's robustness to its SR.

    ``progress(done, total)`` is called after every instance (the job layer uses it for its
    heartbeat and to stop on a cancel request by raising).
    """
    manifest = loaded.manifest
    instances = list_instances(client, study_uid)
    if len(instances) > max_instances:
        raise PacsError(
            f"study {study_uid} holds {len(instances)} instances, more than the "
            f"{max_instances} a job may analyse (setting pacs_max_instances)"
        )
    outcomes: list[InstanceOutcome] = []
    for done, attributes in enumerate(instances, start=1):
        outcomes.append(
            _analyze_instance(client, study_uid, attributes, loaded, method, check_modality, trust)
        )
        if progress is not None:
            progress(done, len(instances))
    summary = StudySummary.build(
        manifest,
        method,
        outcomes,
        study_instance_uid=study_uid,
        robustness=robustness,
        robustness_skipped=None if trust is None else trust.skipped,
    )
    log.info(
        "study %s: %d instance(s), %d analysed, %d skipped, model %s:%d",
        study_uid,
        summary.seen,
        summary.analysed,
        summary.skipped,
        manifest.name,
        manifest.version,
    )
    return summary


def _analyze_instance(
    client: DICOMwebClient,
    study_uid: str,
    attributes: dict[str, Any],
    loaded: LoadedModel,
    method: str,
    check_modality: bool,
    trust: PacsTrust | None,
) -> InstanceOutcome:
    sop_uid, series_uid = str(_value(attributes, SOP_UID)), str(_value(attributes, SERIES_UID))
    outcome = InstanceOutcome(
        sop_instance_uid=sop_uid,
        series_instance_uid=series_uid,
        modality=_value(attributes, MODALITY),
        status="skipped",
    )
    reason = skip_reason(attributes)
    if reason is not None:
        return outcome.model_copy(update={"reason": reason})
    source = _pacs_call(
        f"WADO-RS of instance {sop_uid}",
        client,
        lambda: client.retrieve_instance(study_uid, series_uid, sop_uid, media_types=AS_STORED),
    )
    try:
        results = analyze_dataset(
            source, loaded, method, check_modality=check_modality, trust=trust
        )
    except DicomInputError as exc:
        return outcome.model_copy(update={"reason": str(exc)})
    store_results(client, study_uid, [results.sr, results.sc])
    return analysed(outcome, results)
