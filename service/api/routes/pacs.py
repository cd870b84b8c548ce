"""``/pacs``: list a study's instances in a configured PACS and fetch one instance's DICOM file.

This is the web viewer's "From PACS": a person picks an image from a study, the browser fetches
its file here and sends it to ``/predict`` or ``/explain`` exactly like a dropped file, so a
PACS image meets the same decoder, limits and modality checks as an upload and these routes
only read. (``GET /session`` lists the configured PACS names.)

A PACS is named, never given as a URL, as for PACS jobs: a request can only make the service
talk to the DICOMweb endpoints ``MEDROBUST_PACS_DICOMWEB`` lists. UIDs are checked to be DICOM
UIDs (digits and dots, at most 64 characters: the rule the DICOMweb client itself applies,
leading zeros tolerated as it does) before they go into a PACS URL, so nothing else can reach
one. Every answer is bounded: at most ``pacs_max_instances`` listed, a file of at most
``max_upload_bytes`` (what ``/predict`` takes: a larger one could not be analysed anyway), each
PACS request within ``pacs_timeout_s``.

Scopes: ``predict`` or ``explain``, the scopes that analyse an image (a file read here is only
useful to one of them). The file holds the patient's data like any upload; the log records who
fetched which instance by token fingerprint and UIDs, never a patient value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from service.api.auth import Principal, authenticate
from service.api.deps import SettingsDep
from service.api.errors import (
    ApiError,
    ErrorResponse,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
)
from service.config import Settings
from service.pacs.dicomweb import (
    InstanceTooLargeError,
    ListedInstance,
    PacsError,
    PacsHTTPError,
    PacsTimeoutError,
    StudyNotFoundError,
    browse_study,
    dicomweb_client,
    retrieve_instance_file,
)

log = logging.getLogger("service.api")
router = APIRouter(prefix="/pacs", tags=["pacs"])

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64
ANALYSE_SCOPES = frozenset({"predict", "explain"})
ERRORS: dict[int | str, dict] = {
    401: {"model": ErrorResponse, "description": "missing or invalid bearer token"},
    403: {"model": ErrorResponse, "description": "the token has neither predict nor explain"},
    404: {"model": ErrorResponse, "description": "no such PACS, study or instance"},
    422: {"model": ErrorResponse, "description": "a UID that is not a DICOM UID"},
    502: {"model": ErrorResponse, "description": "the PACS is unreachable or answered an error"},
    504: {"model": ErrorResponse, "description": "the PACS did not answer in pacs_timeout_s"},
}
_bearer = HTTPBearer(auto_error=False, description="an API token from MEDROBUST_API_TOKENS")


async def _analyst(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """A caller whose token may analyse images (401 / 403 otherwise)."""
    caller = authenticate(
        request.app.state.settings, credentials.credentials if credentials else None
    )
    if not caller.scopes & ANALYSE_SCOPES:
        raise Forbidden("this token has neither the 'predict' nor the 'explain' scope")
    return caller


Analyst = Annotated[Principal, Depends(_analyst)]


class StudyInstances(BaseModel):
    pacs: str
    study_instance_uid: str
    instances: list[ListedInstance] = Field(description="in series and instance order")
    truncated: bool = Field(
        description="the study holds more than pacs_max_instances: these are the PACS's first"
    )


def _base_url(settings: Settings, pacs: str) -> str:
    url = settings.pacs_dicomweb.get(pacs)
    if url is None:
        configured = ", ".join(sorted(settings.pacs_dicomweb)) or "none"
        raise NotFound(
            f"unknown PACS {pacs[:64]!r}; configured: {configured} "
            "(setting MEDROBUST_PACS_DICOMWEB)"
        )
    return url


def _check_uid(value: str, what: str) -> str:
    if len(value) > MAX_UID_LENGTH or not UID.match(value):
        raise Unprocessable(
            f"{what} {value[:80]!r} is not a DICOM UID (digits separated by dots, at most "
            f"{MAX_UID_LENGTH} characters)"
        )
    return value


@contextlib.contextmanager
def _pacs_answers(pacs: str) -> Iterator[None]:
    """A PACS failure as the HTTP answer that says whose fault it is: the study or instance is
    not there (404), the file is too large for /predict (413), the PACS is slow (504) or
    unreachable or failing (502)."""
    try:
        yield
    except StudyNotFoundError as exc:
        raise NotFound(str(exc)) from exc
    except InstanceTooLargeError as exc:
        raise PayloadTooLarge(
            f"{exc}, the most /predict accepts (setting max_upload_bytes)"
        ) from exc
    except PacsHTTPError as exc:
        status = 404 if exc.status == 404 else 502
        raise ApiError(f"PACS {pacs!r}: {exc}", status_code=status) from exc
    except PacsTimeoutError as exc:
        raise ApiError(f"PACS {pacs!r}: {exc}", status_code=504) from exc
    except PacsError as exc:
        raise ApiError(f"PACS {pacs!r}: {exc}", status_code=502) from exc


@router.get(
    "/{pacs}/studies/{study_uid}/instances",
    response_model=StudyInstances,
    responses=ERRORS,
    summary="A study's instances in a configured PACS (QIDO-RS), at most pacs_max_instances",
)
async def study_instances(
    pacs: str, study_uid: str, _: Analyst, settings: SettingsDep
) -> StudyInstances:
    url = _base_url(settings, pacs)
    _check_uid(study_uid, "Study Instance UID")
    client = dicomweb_client(url, settings.pacs_timeout_s, retry=False)  # a person waits
    with _pacs_answers(pacs):
        listed, truncated = await asyncio.to_thread(
            browse_study, client, study_uid, settings.pacs_max_instances
        )
    return StudyInstances(
        pacs=pacs, study_instance_uid=study_uid, instances=listed, truncated=truncated
    )


@router.get(
    "/{pacs}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
    response_class=Response,
    responses={
        200: {
            "content": {"application/dicom": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the instance's DICOM file as the PACS stores it",
        },
        413: {"model": ErrorResponse, "description": "larger than max_upload_bytes"},
        **ERRORS,
    },
    summary="One instance's DICOM file from a configured PACS (WADO-RS), to analyse it",
)
async def instance_file(
    pacs: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    caller: Analyst,
    settings: SettingsDep,
) -> Response:
    url = _base_url(settings, pacs)
    for value, what in (
        (study_uid, "Study Instance UID"),
        (series_uid, "Series Instance UID"),
        (sop_uid, "SOP Instance UID"),
    ):
        _check_uid(value, what)
    with _pacs_answers(pacs):
        body = await asyncio.to_thread(
            retrieve_instance_file,
            url,
            study_uid,
            series_uid,
            sop_uid,
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.pacs_timeout_s,
        )
    log.info(
        "PACS %s: instance %s (%d bytes) fetched by token %s",
        pacs,
        sop_uid,
        len(body),
        caller.token_id,
    )
    return Response(
        body,
        media_type="application/dicom",
        headers={
            "Content-Disposition": f'attachment; filename="{sop_uid}.dcm"',
            "Cache-Control": "no-store",  # patient data: no cache keeps a copy
        },
    )
