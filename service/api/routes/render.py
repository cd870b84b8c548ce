"""``POST /render``: the image as the service decodes it for a model, as a lossless PNG.

A DICOM file reaches a model only after its Modality LUT, VOI LUT or window, MONOCHROME1
inversion and the choice of its first frame; a browser can show none of that from the file
itself. The web viewer previews a DICOM upload with this route, so what a user sees is the
service's own rendering, not an approximation of it. The route reuses the upload, check and
decode path of ``/predict`` (:func:`~service.api.upload.parse_image_request`,
:func:`~service.api.images.decode_image`, the decode pool), so its limits (bytes, pixels, decode
memory) and its 4xx answers are the same, and needs the same ``predict`` scope: it discloses
nothing a prediction request could not already see.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from service.api.auth import PredictCaller
from service.api.decoding import DecodePoolDep, decode_cost
from service.api.deps import SettingsDep
from service.api.errors import IMAGE_ERRORS, ErrorResponse
from service.api.images import ImageUpload, decode_image
from service.api.params import (
    EXAMPLE_PNG_BASE64,
    IMAGE_FORM_FIELDS,
    ModelSelection,
    image_request_body,
)
from service.api.upload import parse_image_request
from training.dicom import FrameChoice
from training.explain.overlay import png_bytes

router = APIRouter(tags=["inference"])


def _no_model(value: Any) -> None:
    """Refuse a model selection with words: the parser shares ModelSelection's fields with
    the model routes, but a rendering involves no model, and a silently ignored ``models``
    would suggest a model-specific preprocessing that this route does not apply."""
    if value is not None:
        raise ValueError("/render uses no model: send only the image (and multiframe)")


NoModel = SkipJsonSchema[Annotated[None, BeforeValidator(_no_model)]]


class RenderParams(ModelSelection):
    """Form fields (multipart) or JSON members besides the image: only ``multiframe``."""

    models: NoModel = None
    task: NoModel = None
    multiframe: FrameChoice = Field(
        "first",
        description="a multi-frame DICOM image: render its first frame, or refuse it (422)",
    )


class RenderRequest(RenderParams):
    """The JSON body of ``POST /render``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"image_base64": EXAMPLE_PNG_BASE64}]}
    )

    image_base64: str = Field(description="the PNG, JPEG or DICOM file, base64-encoded")


FORM_FIELDS = {"multiframe": IMAGE_FORM_FIELDS["multiframe"]}


def rendered_png(upload: ImageUpload, multiframe: FrameChoice) -> bytes:
    """Decode as ``/predict`` does, then encode losslessly. Blocking: run in the decode pool,
    whose reservation (:func:`~service.api.decoding.decode_cost`) covers the encoding too: an
    RGB copy and the PNG buffer, ~7 bytes a pixel, where a prediction's float32 preparation
    that this replaces costs 12."""
    image: np.ndarray = decode_image(upload, multiframe)
    return png_bytes(image)


@router.post(
    "/render",
    response_class=Response,
    responses={
        **{code: IMAGE_ERRORS[code] for code in (400, 401, 403, 413, 415)},
        422: {
            "model": ErrorResponse,
            "description": "invalid parameters (any model selection among them); DICOM without "
            "pixel data, a refused multi-frame file, Rescale / Window values that are not finite",
        },
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the decoded image (RGB, the upload's size) as a PNG",
        },
    },
    openapi_extra=image_request_body(RenderRequest, FORM_FIELDS),
    summary="The image as the service decodes it (DICOM: window/level, MONOCHROME1), as PNG",
)
async def render(
    request: Request, _: PredictCaller, settings: SettingsDep, decoder: DecodePoolDep
) -> Response:
    """Same image input as `/predict` (multipart `image` or JSON `image_base64`), same limits
    and errors. Answers the pixels every model's preprocessing starts from, at the upload's
    size: for DICOM the first frame (or 422 with `multiframe=refuse`) through its Modality LUT,
    VOI LUT / window and MONOCHROME1 inversion. Lossless, so a client can compare pixels."""
    upload, params = await parse_image_request(request, settings, RenderParams)
    png = await decoder.run(decode_cost(upload), rendered_png, upload, params.multiframe)
    # a medical image: not to be kept by a browser cache or a proxy
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
