"""Reading an image request's body: capped while it streams in, then JSON or multipart.

An image arrives either as ``multipart/form-data`` (file field ``image`` plus form fields) or as
JSON (``{"image_base64": "...", ...}``). :func:`parse_image_request` refuses a body over the
limit while reading it (413; the declared ``Content-Length`` first), an unaccepted
``Content-Type`` (415) and a malformed body (400/422), validates the parameters against the
route's :class:`~service.api.params.ModelSelection` model, and hands the image bytes to
:func:`service.api.images.check_image`, whose checks come next.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from service.api.images import ImageUpload, check_image
from service.api.params import ModelSelection
from service.config import Settings

# JSON and multipart framing around the image: base64 inflates by 4/3, form fields are small.
BODY_OVERHEAD_BYTES = 64 * 1024
MAX_FORM_FIELD_BYTES = 64 * 1024

P = TypeVar("P", bound=ModelSelection)


def body_limit(settings: Settings) -> int:
    """The most body bytes read for one image: base64 of the upload limit plus framing."""
    return (settings.max_upload_bytes * 4) // 3 + 4 + BODY_OVERHEAD_BYTES


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {int(declared)} bytes is over the {limit} limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(request: Request, body: bytes) -> Request:
    """A request over the same scope whose body is ``body`` (already read and capped)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


def _validate(model: type[P], payload: dict[str, Any]) -> P:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _decode_base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise Unprocessable("image_base64 must be a string of base64 (a data: URL is fine)")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unprocessable(f"image_base64 is not valid base64: {exc}") from None


async def parse_image_request(
    request: Request, settings: Settings, params_model: type[P]
) -> tuple[ImageUpload, P]:
    """The checked image and the validated parameters of a JSON or multipart request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "multipart/form-data"):
        shown = content_type or "none"
        raise UnsupportedMediaType(
            f"Content-Type {shown!r} is not accepted: send multipart/form-data with a file field "
            "'image', or application/json with 'image_base64'"
        )
    body = await read_body(request, body_limit(settings))
    if not body:
        raise Unprocessable("the request body is empty: send an image")
    if content_type == "application/json":
        data, params = _parse_json(body, params_model)
    else:
        data, params = await _parse_multipart(_replay(request, body), params_model)
    return check_image(data, settings), params


def _parse_json(body: bytes, params_model: type[P]) -> tuple[bytes, P]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply to parse") from None
    if not isinstance(payload, dict):
        raise Unprocessable("the JSON body must be an object with 'image_base64'")
    if "image_base64" not in payload:
        raise Unprocessable("the JSON body needs 'image_base64' (the image file, base64-encoded)")
    data = _decode_base64(payload.pop("image_base64"))
    return data, _validate(params_model, payload)


async def _parse_multipart(request: Request, params_model: type[P]) -> tuple[bytes, P]:
    form = await request.form(max_files=1, max_fields=32, max_part_size=MAX_FORM_FIELD_BYTES)
    try:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise Unprocessable("the multipart body needs a file field 'image'")
        data = await image.read()
        fields: dict[str, Any] = {}
        for key in set(form.keys()) - {"image"}:
            values = form.getlist(key)
            if not all(isinstance(v, str) for v in values):
                raise Unprocessable(f"form field {key!r} must be text, not a file")
            fields[key] = values if key in params_model.list_fields else values[-1]
        return data, _validate(params_model, fields)
    finally:
        await form.close()
