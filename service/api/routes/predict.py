"""``POST /predict``: class probabilities from one or several models for one image."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import PredictCaller
from service.api.batching import ARRIVALS
from service.api.decoding import DecodePoolDep, decode_cost
from service.api.deps import RegistryDep, SettingsDep, selected_refs
from service.api.errors import IMAGE_ERRORS
from service.api.images import check_accepted, decode_and_prepare
from service.api.params import (
    EXAMPLE_PNG_BASE64,
    IMAGE_FORM_FIELDS,
    ImageParams,
    image_request_body,
)
from service.api.schemas import ImageInfo, ModelPrediction
from service.api.trust import (
    TRUST_FORM_FIELDS,
    TrustParams,
    TrustPoolDep,
    check_limits,
    plan_for,
)
from service.api.upload import parse_image_request
from training.predict import prediction_from_probabilities

router = APIRouter(tags=["inference"])


class PredictParams(ImageParams, TrustParams):
    """Form fields (multipart) or JSON members besides the image."""


class PredictRequest(PredictParams):
    """The JSON body of ``POST /predict``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"image_base64": EXAMPLE_PNG_BASE64, "models": ["derm:production"]}]
        }
    )

    image_base64: str = Field(description="the PNG, JPEG or DICOM file, base64-encoded")


class PredictResponse(BaseModel):
    image: ImageInfo
    predictions: list[ModelPrediction] = Field(description="one per requested model, in order")


FORM_FIELDS = {
    "models": {
        "type": "array",
        "items": {"type": "string"},
        "description": "model refs (repeat the field or separate with commas)",
    },
    "task": {"type": "string", "description": "use the task's default model"},
    **IMAGE_FORM_FIELDS,
    **TRUST_FORM_FIELDS,
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=IMAGE_ERRORS,
    openapi_extra=image_request_body(PredictRequest, FORM_FIELDS),
    summary="Classify one image with one or several models",
)
async def predict(
    request: Request,
    _: PredictCaller,
    settings: SettingsDep,
    registry: RegistryDep,
    decoder: DecodePoolDep,
    trust: TrustPoolDep,
) -> PredictResponse:
    """Send the image as multipart (`image` file field, plus `models` / `task` fields) or as
    JSON `{"image_base64": ..., "models": [...]}`. Several models answer side by side.

    Concurrent requests for the same model are batched into one forward pass.

    DICOM: the first frame (or 422 with `multiframe=refuse`), rendered through its Modality LUT,
    VOI LUT / window and MONOCHROME1 inversion; 422 if a model does not declare the file's
    Modality / Body Part Examined, unless `allow_modality_mismatch=true`; 415 for a transfer
    syntax with no decoder here. The answer echoes the SOP Instance UID, no patient data.

    `robustness` = flip | certify | all adds each model's robustness block (README: "How far
    can I trust this prediction?"), computed in threads of its own, never in the batches;
    422 over a limit or for `certify` on a model trained without noise and no `noise_sigma`,
    503 past the deadline.
    """
    with ARRIVALS.coming() as arrival:
        upload, params = await parse_image_request(request, settings, PredictParams)
        check_limits(params, settings)
        refs = selected_refs(params, registry)
        served = [await registry.get(ref) for ref in refs]
        accepts = [(s.ref, s.manifest.accepts) for s in served]
        check_accepted(upload, accepts, params.allow_modality_mismatch)
        plans = [plan_for(s.loaded, params, settings) for s in served]
        deadline = trust.deadline(params)
        # Decode and prepare in the decode pool; the batchers know this request is coming from
        # the moment its body is read (ARRIVALS) and wait for it.
        configs = [s.manifest.preprocess for s in served]
        prepared = asyncio.ensure_future(
            decoder.run(decode_cost(upload), decode_and_prepare, upload, configs, params.multiframe)
        )

        async def pixels(index: int) -> np.ndarray:
            return (await prepared)[index]

        rows = await asyncio.gather(
            *(s.batcher.submit(pixels(i), arrival) for i, s in enumerate(served))
        )
    blocks = [
        None if plan is None else (await trust.answer(s.loaded, await pixels(i), plan, deadline))
        for i, (s, plan) in enumerate(zip(served, plans, strict=True))
    ]
    predictions = []
    for ref, model, row, block in zip(refs, served, rows, blocks, strict=True):
        registry.metrics.predictions.labels(model.ref).inc()
        prediction = prediction_from_probabilities(model.manifest, row)
        robustness = None if block is None else block.block
        predictions.append(
            ModelPrediction.of(prediction, ref, model.manifest, robustness, model.forward)
        )
    return PredictResponse(image=ImageInfo.of(upload), predictions=predictions)
