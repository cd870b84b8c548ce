"""The one error mapper: every failure the API knows about becomes ``{"detail": ...}`` with a 4xx.

Handlers raise :class:`ApiError` (or a subclass naming its status); errors that come up from
``training/`` (unknown model, bad attack parameters) and from the job runtime (bad spec, reused
Idempotency-Key, broker down) are mapped here and nowhere else, so a route never needs its own
``try/except`` to turn a library error into an HTTP answer. Anything not
mapped is a bug: it is logged with its traceback and answered with a plain 500 that leaks nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.jobs.errors import EnqueueError, IdempotencyConflict, JobSpecError
from training.attacks import AttackError
from training.dicom import (
    CorruptPixelDataError,
    DicomInputError,
    ModalityMismatchError,
    MultiFrameRefusedError,
    NonFiniteValueError,
    NoPixelDataError,
    NotDicomError,
    UnsupportedPixelFormatError,
    UnsupportedTransferSyntaxError,
)
from training.model_ref import ModelRefError
from training.store import IntegrityError, ModelStoreError
from training.task_defaults import REPAIR, TASKS_FILE, TaskDefaultsFileError

log = logging.getLogger("service.api")


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    detail: Any


class ApiError(Exception):
    """A request the API refuses; ``status_code`` says why, ``detail`` says what to change."""

    status_code = 400

    def __init__(
        self, detail: Any, status_code: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class NotAcceptable(ApiError):
    status_code = 406


class PayloadTooLarge(ApiError):
    status_code = 413


class UnsupportedMediaType(ApiError):
    status_code = 415


class Conflict(ApiError):
    status_code = 409


class Unprocessable(ApiError):
    status_code = 422


class ServiceUnavailable(ApiError):
    status_code = 503


# nginx's "client closed request": not an HTTP status a client ever sees (it has gone), but the
# status the metrics record, so a disconnect mid-upload is not counted as a server error.
CLIENT_CLOSED_REQUEST = 499


# Documented on every route that takes an image (OpenAPI ``responses=``).
IMAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "corrupt, truncated or malformed input"},
    401: {"model": ErrorResponse, "description": "missing or invalid bearer token"},
    403: {"model": ErrorResponse, "description": "the token lacks the route's scope"},
    404: {"model": ErrorResponse, "description": "unknown model, version, alias or task"},
    413: {"model": ErrorResponse, "description": "upload bytes or image pixels over the limit"},
    415: {
        "model": ErrorResponse,
        "description": "body or image format not accepted; DICOM transfer syntax or pixel "
        "format this server cannot decode",
    },
    422: {
        "model": ErrorResponse,
        "description": "invalid parameters; DICOM without pixel data, a refused multi-frame "
        "file, Rescale / Window values that are not finite, or a Modality / Body Part the "
        "model does not accept",
    },
    503: {
        "model": ErrorResponse,
        "description": "the model store's task defaults file is unreadable, for a request that "
        "names only a task (one naming its models is served); a trust block past its time budget",
    },
}

# training.dicom's refusals: 400 the bytes are not a readable DICOM file, 415 this server lacks
# the decoder, 422 a well-formed DICOM object this request cannot use.
DICOM_STATUS: dict[type[DicomInputError], int] = {
    NotDicomError: 400,
    CorruptPixelDataError: 400,
    UnsupportedTransferSyntaxError: 415,
    UnsupportedPixelFormatError: 415,
    NoPixelDataError: 422,
    MultiFrameRefusedError: 422,
    NonFiniteValueError: 422,
    ModalityMismatchError: 422,
}


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error may echo client text, even lone surrogates."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":"), default=str).encode()


def _json(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return AsciiJSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _json(exc.status_code, exc.detail, exc.headers)


async def _model_store_error(_: Request, exc: Exception) -> JSONResponse:
    return _json(404, str(exc))  # also a ModelRefError: a ref no store could hold names no model


async def _attack_error(_: Request, exc: Exception) -> JSONResponse:
    return _json(422, str(exc))


async def _dicom_error(_: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in DICOM_STATUS.items() if isinstance(exc, kind)), 400)
    return _json(status, str(exc))


async def _job_spec_error(_: Request, exc: Exception) -> JSONResponse:
    return _json(422, str(exc))


async def _idempotency_conflict(_: Request, exc: Exception) -> JSONResponse:
    return _json(409, str(exc))


async def _enqueue_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EnqueueError)
    # the job exists (failed): its id lets the client look at it or resubmit knowingly
    detail = {"message": str(exc), "job_id": exc.job.id, "state": exc.job.state.value}
    return _json(503, detail)


async def _integrity_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("model artifact failed its integrity check: %s", exc)
    return _json(500, f"the stored model failed its integrity check: {exc}")


def unreadable_task_defaults(exc: TaskDefaultsFileError) -> str:
    """What a client is told about an unreadable task defaults file: the file as the store's,
    not by its server path (answers never show where the service keeps its files), the fix,
    and that naming the model still works."""
    return (
        f"the model store's task defaults file <store>/{TASKS_FILE} is unreadable "
        f"({exc.problem}): an administrator must {REPAIR}; meanwhile name the model(s) with "
        "'models'"
    )


async def _task_defaults_file_error(_: Request, exc: Exception) -> JSONResponse:
    # 503, not 4xx: the request is fine and the server cannot answer it until someone repairs
    # the store; not 500: nothing is wrong with the code, and the answer says what to do
    assert isinstance(exc, TaskDefaultsFileError)
    log.error("%s", exc)  # the server's log names the real path
    return _json(503, unreadable_task_defaults(exc))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {k: v for k, v in error.items() if k in ("type", "loc", "msg")} for error in exc.errors()
    ]
    return _json(422, errors)


async def _http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _json(exc.status_code, exc.detail, getattr(exc, "headers", None))


async def _client_disconnect(request: Request, _: Exception) -> Response:
    log.info(
        "client disconnected before sending its whole request: %s %s",
        request.method,
        request.url.path,
    )
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping above on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ModelStoreError, _model_store_error)
    app.add_exception_handler(ModelRefError, _model_store_error)
    app.add_exception_handler(JobSpecError, _job_spec_error)
    app.add_exception_handler(IdempotencyConflict, _idempotency_conflict)
    app.add_exception_handler(EnqueueError, _enqueue_error)
    app.add_exception_handler(AttackError, _attack_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(TaskDefaultsFileError, _task_defaults_file_error)
    app.add_exception_handler(DicomInputError, _dicom_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unhandled)
