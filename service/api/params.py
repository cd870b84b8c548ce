"""What an image route takes besides the image: its parameters and their OpenAPI description.

The same parameters arrive as JSON members (next to ``image_base64``) or as multipart form
fields (next to the file field ``image``); one pydantic model per route validates both, and
:func:`image_request_body` documents both bodies in OpenAPI. Reading the body is
:mod:`service.api.upload`'s job, checking the image :mod:`service.api.images`'.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from training.dicom import FrameChoice
from training.model_ref import REF_PATTERN

# An 8 × 8 grayscale PNG: the example image of the OpenAPI schema (and of /docs "Try it out").
EXAMPLE_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAK0lEQVQIHSXBQRHAIADAsPWuQpCCFKRMClKQghQeTfgMw"
    "zANy/AbtuEYrnl7nARpKrCqJAAAAABJRU5ErkJggg=="
)

# Checked as a pattern (422 before any route runs, and documented in OpenAPI); what it admits,
# training.model_ref.ModelRef.parse admits too.
ModelRefText = Annotated[str, StringConstraints(pattern=REF_PATTERN)]
ModelRefs = Annotated[list[ModelRefText], Field(min_length=1, max_length=8)]


def _split_refs(value: Any) -> Any:
    """``"a,b"`` or ``["a,b", "c"]`` (form fields) → ``["a", "b", "c"]``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [part.strip() for v in value for part in v.split(",") if part.strip()]
    return value


class ModelSelection(BaseModel):
    """Which models answer: ``models`` (refs ``name``, ``name:version``, ``name:alias``), or a
    ``task`` whose default model answers (``settings.default_models``, else the store's)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    #: fields a multipart body may repeat (every other field: its last value counts)
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
        None,
        max_length=64,
        description=(
            "use the task's default model (MEDROBUST_DEFAULT_MODELS, else the store's, set by "
            "`medrobust models default` or the quickstart)"
        ),
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


def image_request_body(json_model: type[BaseModel], form_fields: dict[str, Any]) -> dict:
    """OpenAPI ``requestBody`` for a route that takes JSON (``json_model``) or multipart.

    The routes read their body themselves (:func:`service.api.upload.parse_image_request`, to
    cap it while reading), so FastAPI cannot infer this; it goes in ``openapi_extra``.
    """
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
