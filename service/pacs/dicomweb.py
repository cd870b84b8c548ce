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

For the web viewer's "From PACS", :func:`browse_study` lists a study's instances (bounded) and
:func:`retrieve_instance_file` fetches one file as stored (bounded in bytes and time); the
viewer then sends it to ``/predict`` or ``/explain`` like a dropped file.

Only SOP/Series/Study UIDs, modalities and model identities appear in logs and summaries; no
patient values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from email.message import Message
from typing import TYPE_CHECKING, Any

import requests
from dicomweb_client import DICOMwebClient
from pydantic import BaseModel, Field
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
MANUFACTURER_TAG, INSTANCE_NUMBER, BODY_PART = "00080070", "00200013", "00180015"
QUERY_FIELDS = (MODALITY, SERIES_UID, MANUFACTURER_TAG, INSTANCE_NUMBER)
#: retrieve the instance in the transfer syntax it was stored in (the decoder handles compression)
AS_STORED = (("application/dicom", "*"),)
#: the same as an Accept header, for :func:`retrieve_instance_file`'s own streamed request
AS_STORED_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: room for the multipart boundaries and part headers around the one file of a WADO-RS answer
MULTIPART_FRAMING_BYTES = 64 * 1024
#: the total deadline is checked between reads of this size (each read: ≤ timeout_s silent)
READ_CHUNK_BYTES = 64 * 1024
#: modalities that never carry an image to classify (other non-images are retrieved, then
#: refused by the decoder: not every PACS answers QIDO with Rows, so "no Rows" proves nothing)
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "RTPLAN", "RTSTRUCT", "REG", "SEG"})

Progress = Callable[[int, int], None]


class PacsError(RuntimeError):
    """The PACS could not be reached, refused a request, or does not hold the study."""


class StudyNotFoundError(PacsError):
    """QIDO-RS found no instance of the study."""


class PacsHTTPError(PacsError):
    """The PACS answered an HTTP error; ``status`` says which (None when it is unknown)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class PacsTimeoutError(PacsError):
    """The PACS did not answer, or not all of it, within the time limit."""


class InstanceTooLargeError(PacsError):
    """The instance's file is larger than the caller agreed to hold in memory."""


class StudySummary(AnalysisSummary):
    """What a round trip did to one study."""

    study_instance_uid: str


def dicomweb_client(url: str, timeout_s: float = 30.0, *, retry: bool = True) -> DICOMwebClient:
    """A client for one DICOMweb base URL (QIDO, WADO and STOW under the same root).

    ``retry``: the client's own retries (5 attempts, backing off 1 + 2 + 4 + 8 s) suit a job;
    a person waiting on a page is better served by one attempt within ``timeout_s`` and an
    error they can retry.
    """
    client = DICOMwebClient(url=url.rstrip("/"), timeout=timeout_s)
    if not retry:
        client.set_http_retry_params(retry=False)
    return client


def _value(attributes: dict[str, Any], tag: str) -> Any:
    values = attributes.get(tag, {}).get("Value") or [None]
    return values[0]


def _number(attributes: dict[str, Any], tag: str) -> int:
    """An IS value as an int for sorting; 0 when absent or malformed (order is cosmetic)."""
    try:
        return int(_value(attributes, tag) or 0)
    except (TypeError, ValueError):
        return 0


def _pacs_call(what: str, base_url: str, call: Callable[[], Any]) -> Any:
    """Run one DICOMweb request; network and HTTP failures become a :class:`PacsError` (the
    subclasses say which, for a caller that answers each differently: an HTTP API)."""
    try:
        return call()
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise PacsHTTPError(
            f"the PACS at {base_url} answered HTTP {status or '?'} to {what}", status
        ) from exc
    except requests.RequestException as exc:
        kind = PacsTimeoutError if isinstance(exc, requests.Timeout) else PacsError
        raise kind(
            f"the PACS at {base_url} is unreachable ({what}): {type(exc).__name__}: {exc}"
        ) from exc


def list_instances(
    client: DICOMwebClient,
    study_uid: str,
    *,
    fields: Sequence[str] = QUERY_FIELDS,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """QIDO-RS: the study's instances (DICOM JSON), in series and instance order.

    ``limit``: one query for at most that many (the PACS's first), so a huge study costs one
    bounded answer; without it, every instance, page after page.
    """
    found = _pacs_call(
        f"QIDO-RS for study {study_uid}",
        client.base_url,
        lambda: client.search_for_instances(
            study_instance_uid=study_uid,
            fields=list(fields),
            limit=limit,
            get_remaining=limit is None,
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


class ListedInstance(BaseModel):
    """One instance as :func:`browse_study` lists it: UIDs and what a person picks by; no
    patient value."""

    sop_instance_uid: str
    series_instance_uid: str
    modality: str | None
    body_part_examined: str | None
    instance_number: int | None
    skip_reason: str | None = Field(
        description="why analysing it makes no sense (not an image, our own result), or null"
    )


def _listed(attributes: dict[str, Any]) -> ListedInstance | None:
    sop_uid, series_uid = _value(attributes, SOP_UID), _value(attributes, SERIES_UID)
    if not (sop_uid and series_uid):
        return None  # a PACS answer missing a UID names nothing that could be retrieved
    number = _value(attributes, INSTANCE_NUMBER)
    return ListedInstance(
        sop_instance_uid=str(sop_uid),
        series_instance_uid=str(series_uid),
        modality=_value(attributes, MODALITY),
        body_part_examined=_value(attributes, BODY_PART),
        instance_number=None if number is None else _number(attributes, INSTANCE_NUMBER),
        skip_reason=skip_reason(attributes),
    )


def browse_study(
    client: DICOMwebClient, study_uid: str, limit: int
) -> tuple[list[ListedInstance], bool]:
    """QIDO-RS: at most ``limit`` instances of the study (the PACS's first, in series and
    instance order), and whether it holds more."""
    found = list_instances(client, study_uid, fields=(*QUERY_FIELDS, BODY_PART), limit=limit + 1)
    listed = [item for item in map(_listed, found[:limit]) if item is not None]
    return listed, len(found) > limit


def _single_part(content_type: str, body: bytes, base_url: str) -> bytes:
    """The one file of a WADO-RS ``multipart/related`` answer (a bare ``application/dicom``
    answer is the file itself)."""
    header = Message()
    header["Content-Type"] = content_type
    if header.get_content_type() == "application/dicom":
        return body
    boundary = header.get_param("boundary")
    if header.get_content_maintype() != "multipart" or not isinstance(boundary, str):
        raise PacsError(f"the PACS at {base_url} answered {content_type!r}, not a DICOM file")
    delimiter = b"--" + boundary.encode()
    start = body.find(delimiter)
    headers_end = body.find(b"\r\n\r\n", start) if start >= 0 else -1
    end = body.find(b"\r\n" + delimiter, headers_end) if headers_end >= 0 else -1
    if end < 0:
        raise PacsError(f"the PACS at {base_url} answered a malformed multipart message")
    return body[headers_end + 4 : end]


def retrieve_instance_file(
    base_url: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    *,
    max_bytes: int,
    timeout_s: float,
) -> bytes:
    """WADO-RS: one instance's DICOM file as stored (no transcoding asked for), its bytes
    untouched.

    Bounded where ``DICOMwebClient.retrieve_instance`` is not: that one reads the whole answer
    and parses it into a Dataset, whatever its size and however slowly it trickles in. Here the
    answer is streamed and dropped past ``max_bytes`` (:class:`InstanceTooLargeError`) or once
    ``timeout_s`` have passed in all (:class:`PacsTimeoutError`; checked between 64 KiB reads,
    and no read waits more than ``timeout_s`` for data), so one request holds bounded memory and
    time.
    """
    url = f"{base_url.rstrip('/')}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    what = f"WADO-RS of instance {sop_uid}"
    deadline = time.monotonic() + timeout_s

    def too_large() -> InstanceTooLargeError:
        return InstanceTooLargeError(f"instance {sop_uid} is larger than {max_bytes} bytes")

    def fetch() -> tuple[str, bytes]:
        headers = {"Accept": AS_STORED_ACCEPT}
        with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_content(READ_CHUNK_BYTES):  # decompressed, if gzipped
                body += chunk
                if len(body) > max_bytes + MULTIPART_FRAMING_BYTES:
                    raise too_large()
                if time.monotonic() > deadline:
                    raise PacsTimeoutError(
                        f"the PACS at {base_url} did not send all of {what} in {timeout_s:g} s"
                    )
            return response.headers.get("Content-Type", ""), bytes(body)

    content_type, body = _pacs_call(what, base_url, fetch)
    file = _single_part(content_type, body, base_url)
    if len(file) > max_bytes:
        raise too_large()
    return file


def store_results(client: DICOMwebClient, study_uid: str, datasets: list[Dataset]) -> None:
    """STOW-RS into the study; any object the PACS lists as failed fails the call."""
    response = _pacs_call(
        f"STOW-RS into study {study_uid}",
        client.base_url,
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
        client.base_url,
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
