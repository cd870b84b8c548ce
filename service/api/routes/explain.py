"""``POST /explain``: prediction plus Grad-CAM (and attention) overlays, optionally vs an attack.

The work (one forward/backward pass per map, the attack's steps) runs in a worker thread via
``training.explain.image.explain_image``; the registry bounds how many run at once.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import ExplainCaller
from service.api.decoding import DecodePoolDep, decode_cost
from service.api.deps import RegistryDep, SettingsDep, selected_refs
from service.api.errors import IMAGE_ERRORS, Unprocessable
from service.api.images import check_accepted, decode_image
from service.api.models_registry import ServedModel
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
from training.attacks import Attack, available_attacks, make_attack
from training.explain.compare import MapComparison
from training.explain.image import ImageExplanation, explain_image
from training.preprocess import prepare_image
from training.trust.answer import RobustnessBlock, TrustAnswer, wants

router = APIRouter(tags=["inference"])


class ExplainParams(ImageParams, TrustParams):
    """Form fields (multipart) or JSON members besides the image."""

    method: Literal["gradcam", "gradcam++"] = "gradcam"
    class_: int | str | None = Field(
        None,
        alias="class",
        description="class to explain, by name or index (default: the predicted class)",
    )
    attack: str | None = Field(
        None,
        max_length=32,
        description=f"explain the adversarial image too: one of {available_attacks()}",
    )
    epsilon: float | None = Field(None, description="attack budget in pixel units (0-255 scale)")
    steps: int | None = Field(None, ge=1, le=100, description="iterations (iterative attacks)")


class ExplainRequest(ExplainParams):
    """The JSON body of ``POST /explain``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image_base64": EXAMPLE_PNG_BASE64,
                    "models": ["derm:production"],
                    "method": "gradcam",
                    "attack": "pgd",
                    "epsilon": 2,
                    "steps": 5,
                }
            ]
        }
    )

    image_base64: str = Field(description="the PNG, JPEG or DICOM file, base64-encoded")


class Explanation(BaseModel):
    ref: str
    model: str
    version: int
    weights_sha256: str
    method: str
    layer: str = Field(description="the layer Grad-CAM reads")
    class_explained: str
    prediction: ModelPrediction
    overlays: dict[str, str] = Field(
        description="base64 PNGs: the method's map, 'attention' for attention models; with an "
        "attack also 'adversarial_image' and the maps suffixed '_adversarial'"
    )
    adversarial_prediction: ModelPrediction | None = None
    comparison: MapComparison | None = None
    attack: dict[str, Any] | None = None
    robustness: RobustnessBlock | None = Field(
        None, description="with robustness=flip the adversarial overlays show the L∞ smallest flip"
    )


class ExplainResponse(BaseModel):
    image: ImageInfo
    explanations: list[Explanation]


FORM_FIELDS = {
    "models": {"type": "array", "items": {"type": "string"}},
    "task": {"type": "string"},
    "method": {"type": "string", "enum": ["gradcam", "gradcam++"]},
    "class": {"type": "string", "description": "class name or index"},
    "attack": {"type": "string"},
    "epsilon": {"type": "number"},
    "steps": {"type": "integer", "minimum": 1, "maximum": 100},
    **IMAGE_FORM_FIELDS,
    **TRUST_FORM_FIELDS,
}


def build_attack(params: ExplainParams) -> Attack | None:
    """The attack asked for, validated by ``training.attacks`` (its AttackError → 422)."""
    if params.attack is None:
        if params.epsilon is not None or params.steps is not None:
            raise Unprocessable("'epsilon' and 'steps' need an 'attack'")
        return None
    if params.attack.lower() not in available_attacks():
        raise Unprocessable(
            f"unknown attack {params.attack!r}: choose one of {', '.join(available_attacks())}"
        )
    options: dict[str, Any] = {}
    if params.epsilon is not None:
        options["epsilon"] = params.epsilon
    if params.steps is not None:
        options["steps"] = params.steps
    return make_attack(params.attack, **options)


def class_index(served: ServedModel, value: int | str | None) -> int | None:
    """A class name or index → the model's class index (422 if it has no such class)."""
    if value is None:
        return None
    names = served.manifest.class_names
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if not re.fullmatch(r"\d{1,6}", value):
            raise Unprocessable(f"{served.ref} has no class {value!r}; its classes: {names}")
        value = int(value)
    if not 0 <= value < len(names):
        raise Unprocessable(f"{served.ref} has no class index {value}; its classes: {names}")
    return value


def wants_png(format_: str | None, accept: str) -> bool:
    if format_ is not None:
        return format_ == "png"
    accepted = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "image/png" in accepted and "application/json" not in accepted


def _explanation(
    ref: str, served: ServedModel, result: ImageExplanation, trust: TrustAnswer | None
) -> Explanation:
    manifest = served.manifest
    adversarial = result.adversarial_prediction
    return Explanation(
        ref=ref,
        model=manifest.name,
        version=manifest.version,
        weights_sha256=manifest.weights_sha256,
        method=result.method,
        layer=result.layer,
        class_explained=result.class_explained,
        prediction=ModelPrediction.of(result.prediction, ref, manifest),
        overlays={k: base64.b64encode(v).decode("ascii") for k, v in result.overlays.items()},
        adversarial_prediction=(
            ModelPrediction.of(adversarial, ref, manifest) if adversarial else None
        ),
        comparison=result.comparison,
        attack=result.attack,
        robustness=None if trust is None else trust.block,
    )


def _flip_title(answer: TrustAnswer | None) -> str | None:
    """The attacked tiles' title when they show the smallest L∞ flip (robustness=flip)."""
    flip = None if answer is None or answer.block.flip is None else answer.block.flip.get("linf")
    if flip is None or flip.upper is None:
        return None
    return f"smallest flip L∞ ε={flip.upper:g}/255 ({flip.attack})"


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses={
        **IMAGE_ERRORS,
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "JSON overlays, or one PNG panel with format=png / Accept: image/png",
        },
    },
    openapi_extra=image_request_body(ExplainRequest, FORM_FIELDS),
    summary="Grad-CAM / attention overlays for one image, optionally next to an attacked copy",
)
async def explain(
    request: Request,
    _: ExplainCaller,
    settings: SettingsDep,
    registry: RegistryDep,
    decoder: DecodePoolDep,
    trust: TrustPoolDep,
    format: Annotated[
        Literal["json", "png"] | None,
        Query(description="png: one image/png panel (one model only); default JSON"),
    ] = None,
) -> Response | ExplainResponse:
    """Same image input as `/predict`. `method` gradcam|gradcam++, optional `class`, optional
    `attack` + `epsilon` (+ `steps`) to explain the adversarial image next to the clean one.
    The JSON answer carries base64 PNG overlays; `?format=png` or `Accept: image/png` returns
    the overlays side by side as one PNG, with the model named in `X-Model*` headers: tiles of
    at least 512 px (or the image's size), each titled (clean/attacked, map, model, class
    probability, ε), a colour bar, and the titles and tile boxes as JSON in an iTXt chunk
    (keyword `medrobust:panel`).
    DICOM input is handled as by `/predict` (`allow_modality_mismatch`, `multiframe`).
    `robustness` adds the block as on `/predict`; with flip (or all) the adversarial overlays
    (and the PNG panel) show the image that flips the prediction at the smallest L∞ ε found.
    """
    upload, params = await parse_image_request(request, settings, ExplainParams)
    check_limits(params, settings)
    if wants(params.robustness)[0] and params.attack is not None:
        raise Unprocessable(
            "robustness=flip explains the smallest flip: drop 'attack', or ask "
            "for robustness=certify"
        )
    png = wants_png(format, request.headers.get("accept", ""))
    refs = selected_refs(params, registry)
    if png and len(refs) != 1:
        raise Unprocessable("a PNG panel explains one model: name one, or ask for JSON")
    attack = build_attack(params)
    served = [await registry.get(ref) for ref in refs]
    classes = [class_index(model, params.class_) for model in served]
    accepts = [(s.ref, s.manifest.accepts) for s in served]
    check_accepted(upload, accepts, params.allow_modality_mismatch)
    plans = [plan_for(model.loaded, params, settings) for model in served]
    deadline = trust.deadline(params)
    image = await decoder.run(decode_cost(upload), decode_image, upload, params.multiframe)
    results, answers = [], []
    for model, index, plan in zip(served, classes, plans, strict=True):
        answer = None
        if plan is not None:
            pixels = await decoder.run(
                decode_cost(upload), prepare_image, image, model.manifest.preprocess
            )
            answer = await trust.answer(model.loaded, pixels, plan, deadline)
        adversarial = None if answer is None else answer.adversarial
        async with registry.explain_slots:
            result = await asyncio.to_thread(
                explain_image,
                model.loaded,
                image,
                params.method,
                index,
                attack,
                adversarial=adversarial,
            )
        registry.metrics.explanations.labels(model.ref).inc()
        results.append(result)
        answers.append(answer)
    if png:
        manifest, result = served[0].manifest, results[0]
        headers = {
            "X-Model": manifest.name,
            "X-Model-Version": str(manifest.version),
            "X-Weights-Sha256": manifest.weights_sha256,
            "X-Class-Explained": quote(result.class_explained),
            "X-Top-Class": quote(result.prediction.top_class),
            "X-Overlays": ",".join(result.overlays),
        }
        panel = await asyncio.to_thread(result.panel_png, _flip_title(answers[0]))
        return Response(panel, media_type="image/png", headers=headers)
    return ExplainResponse(
        image=ImageInfo.of(upload),
        explanations=[
            _explanation(ref, model, result, answer)
            for ref, model, result, answer in zip(refs, served, results, answers, strict=True)
        ],
    )
