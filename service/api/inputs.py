"""Request bodies that carry an image: read with a byte cap, sniff, check, then decode.

An image arrives either as ``multipart/form-data`` (file field ``image`` plus form fields) or as
JSON (``{"image_base64": "...", ...}``). Whatever the route, the checks run in this order, and the
first that fails answers with a 4xx and a message:

1. body bytes over the limit while reading (413; the declared ``Content-Length`` first);
2. the format from the file's magic bytes, never from a declared type (415 unless allowed);
3. the pixel count from the header alone (PNG IHDR, JPEG SOF, DICOM Rows × Columns × frames),
   before anything is decoded, so a 50,000 × 50,000 PNG header costs nothing (413);
4. a truncated file (PNG without IEND, JPEG without EOI) (400);
5. decoding itself (400 if the decoder refuses).

DICOM is parsed once, by ``training.dicom``, at step 3 (header) and rendered at step 5; its
errors go to the one error mapper (``service.api.errors``): an unreadable file 400, no pixel
data 422, an unsupported transfer syntax or pixel format 415, a refused multi-frame file 422,
and, once the models are known, a Modality / Body Part the model does not accept 422 unless
the request sets ``allow_modality_mismatch``.

Decoding (:func:`decode_image`) is blocking: call it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydicom.dataset import Dataset
from starlette.datastructures import UploadFile

from service.api.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from service.config import Settings
from training.dicom import (
    DicomAcceptance,
    FrameChoice,
    ModalityMismatchError,
    check_acceptance,
    dicom_to_image,
    is_dicom,
    number_of_frames,
    read_dicom,
    require_pixel_data,
)
from training.preprocess import PreprocessConfig, decode_image_bytes, prepare_image

# Formats this module can size from the header; settings.allowed_formats picks among them.
SUPPORTED_FORMATS = ("png", "jpeg", "dicom")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT/JPG/DAC.
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# JSON and multipart framing around the image: base64 inflates by 4/3, form fields are small.
BODY_OVERHEAD_BYTES = 64 * 1024
MAX_FORM_FIELD_BYTES = 64 * 1024

# An 8 × 8 grayscale PNG: the example image of the OpenAPI schema (and of /docs "Try it out").
EXAMPLE_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAK0lEQVQIHSXBQRHAIADAsPWuQpCCFKRMClKQghQeTfgMw"
    "zANy/AbtuEYrnl7nARpKrCqJAAAAABJRU5ErkJggg=="
)

MODEL_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$"
ModelRef = Annotated[str, StringConstraints(pattern=MODEL_REF_PATTERN)]
ModelRefs = Annotated[list[ModelRef], Field(min_length=1, max_length=8)]


def _split_refs(value: Any) -> Any:
    """``"a,b"`` or ``["a,b", "c"]`` (form fields) → ``["a", "b", "c"]``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [part.strip() for v in value for part in v.split(",") if part.strip()]
    return value


class ModelSelection(BaseModel):
    """Which models answer: ``models`` (refs ``name``, ``name:version``, ``name:alias``), or a
    ``task`` whose configured default model answers (``settings.default_models``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    list_fields: ClassVar[frozenset[str]] = frozenset({"models"})

    models: Annotated[
        ModelRefs | None,
        BeforeValidator(_split_refs),
        Field(
            description="model refs: name, name:version or name:alias (latest if bare)",
            examples=[["derm:production", "derm-baseline"]],
        ),
    ] = None
    task: str | None = Field(
        None, max_length=64, description="use the task's default model (settings.default_models)"
    )


class ImageParams(ModelSelection):
    """Model selection plus what to do with a DICOM image (ignored for PNG/JPEG)."""

    allow_modality_mismatch: bool = Field(
        False,
        description="run the models on a DICOM image whose Modality / Body Part Examined is not "
        "one they declare (otherwise 422)",
    )
    multiframe: FrameChoice = Field(
        "first",
        description="a multi-frame DICOM image: use its first frame, or refuse it (422)",
    )


# Form-field schema of ImageParams' own fields, for the multipart request bodies.
IMAGE_FORM_FIELDS: dict[str, Any] = {
    "allow_modality_mismatch": {
        "type": "boolean",
        "default": False,
        "description": "DICOM: run even if Modality / Body Part Examined is not what the model "
        "declares",
    },
    "multiframe": {
        "type": "string",
        "enum": ["first", "refuse"],
        "default": "first",
        "description": "DICOM: first frame of a multi-frame image, or refuse it",
    },
}

P = TypeVar("P", bound=ModelSelection)


@dataclass(frozen=True)
class ImageUpload:
    """Checked (not yet decoded) image bytes."""

    data: bytes
    format: str
    width: int
    height: int
    frames: int = 1
    # The parsed DICOM header (pixels not yet decoded), kept so the file is parsed once.
    dataset: Dataset | None = field(default=None, compare=False, repr=False)


def image_request_body(json_model: type[BaseModel], form_fields: dict[str, Any]) -> dict:
    """OpenAPI ``requestBody`` for a route that takes JSON (``json_model``) or multipart."""
    schema = json_model.model_json_schema()
    schema.pop("title", None)
    multipart = {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {
                "type": "string",
                "format": "binary",
                "description": "PNG, JPEG or DICOM Part 10 file",
            },
            **form_fields,
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": multipart},
                "application/json": {"schema": schema},
            },
        }
    }


# ---------------------------------------------------------------------------------------------
# reading the body


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


# ---------------------------------------------------------------------------------------------
# sniffing and header checks (no decoding)


def sniff_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"`` (Part 10: ``DICM`` after the 128-byte preamble, or at
    the start when a writer dropped the preamble)."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if is_dicom(data):
        return "dicom"
    return None


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which PNG requires to come first."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        raise BadRequest("corrupt PNG: no IHDR header after the signature")
    width, height = struct.unpack(">II", data[16:24])
    if data.rfind(b"IEND") < 33:
        raise BadRequest("truncated PNG: the file ends before its IEND chunk")
    return width, height


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment, walking the marker segments."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise BadRequest(f"corrupt JPEG: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # segments without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            break  # end of image or start of scan before any frame header
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in JPEG_SOF:
            if i + 9 > n or length < 8:
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if data.rfind(b"\xff\xd9") < i:
                raise BadRequest("truncated JPEG: the file ends before its end-of-image marker")
            return width, height
        if length < 2:
            break
        i += 2 + length
    raise BadRequest("corrupt or truncated JPEG: no frame header (SOF) found")


def dicom_header(data: bytes) -> tuple[Dataset, int, int, int]:
    """The parsed dataset and its (width, height, frames), before any pixel is decoded.

    ``training.dicom`` errors (not DICOM, no pixel data) go up to the error mapper.
    """
    dataset = read_dicom(data)
    require_pixel_data(dataset)
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except Exception:  # absent, or raw bytes pydicom cannot convert (e.g. a US of 3 bytes)
        raise BadRequest("corrupt DICOM image: missing or invalid Rows / Columns") from None
    return dataset, columns, rows, number_of_frames(dataset)


def check_image(data: bytes, settings: Settings) -> ImageUpload:
    """Format and dimensions from the bytes alone; 413/415/400 on any limit or defect."""
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"image of {len(data)} bytes is over the {settings.max_upload_bytes}-byte limit"
        )
    allowed = [f for f in SUPPORTED_FORMATS if f in settings.allowed_formats]
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            f"not an image this service reads: send one of {', '.join(allowed)}"
        )
    if fmt not in allowed:
        raise UnsupportedMediaType(f"{fmt} images are not accepted here: send {', '.join(allowed)}")
    frames, dataset = 1, None
    if fmt == "png":
        width, height = png_size(data)
    elif fmt == "jpeg":
        width, height = jpeg_size(data)
    else:
        dataset, width, height, frames = dicom_header(data)
    if width < 1 or height < 1 or frames < 1:
        raise BadRequest(f"corrupt {fmt}: {width} × {height} × {frames} frames")
    pixels = width * height * frames
    if pixels > settings.max_image_pixels:
        raise PayloadTooLarge(
            f"image of {width} × {height}"
            + (f" × {frames} frames" if frames > 1 else "")
            + f" = {pixels:,} pixels is over the {settings.max_image_pixels:,}-pixel limit"
        )
    return ImageUpload(
        data=data, format=fmt, width=width, height=height, frames=frames, dataset=dataset
    )


# ---------------------------------------------------------------------------------------------
# decoding (blocking: run in a worker thread)


def decode_image(upload: ImageUpload, multiframe: FrameChoice = "first") -> np.ndarray:
    """Checked bytes → uint8 RGB or grayscale array; 400/415 when the decoder refuses.

    DICOM goes through ``training.dicom`` (its errors reach the error mapper): the first frame,
    or a refusal of multi-frame files when ``multiframe="refuse"``.
    """
    if upload.format == "dicom":
        dataset = upload.dataset if upload.dataset is not None else read_dicom(upload.data)
        return dicom_to_image(dataset, frame=multiframe)
    try:
        image = decode_image_bytes(upload.data, source=f"uploaded {upload.format}")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if image.shape[:2] != (upload.height, upload.width):
        raise BadRequest(
            f"corrupt {upload.format}: decoded {image.shape[1]} × {image.shape[0]}, "
            f"header says {upload.width} × {upload.height}"
        )
    return image


def check_accepted(
    upload: ImageUpload, models: list[tuple[str, DicomAcceptance]], params: ImageParams
) -> None:
    """Refuse (422, via the error mapper) a DICOM image that a model does not declare it
    accepts, unless the request sets ``allow_modality_mismatch``. PNG/JPEG carry no modality."""
    if upload.dataset is None or params.allow_modality_mismatch:
        return
    for ref, acceptance in models:
        try:
            check_acceptance(upload.dataset, acceptance, model=f"model {ref}")
        except ModalityMismatchError as exc:
            raise ModalityMismatchError(
                f"{exc}; set allow_modality_mismatch=true to run it anyway",
                modality=exc.modality,
                body_part=exc.body_part,
                acceptance=exc.acceptance,
            ) from None


def decode_and_prepare(
    upload: ImageUpload, configs: list[PreprocessConfig], multiframe: FrameChoice = "first"
) -> list[np.ndarray]:
    """Decode once, then prepare the pixels each model expects (its stored preprocessing)."""
    image = decode_image(upload, multiframe)
    try:
        return [prepare_image(image, config) for config in configs]
    except ValueError as exc:
        raise Unprocessable(f"cannot prepare the image for the model: {exc}") from None
