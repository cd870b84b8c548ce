"""Response shapes shared by several routes. Every model-derived answer names the model, its
version and its weights' sha256."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.api.inputs import ImageUpload
from training.dicom import header_value
from training.predict import Prediction
from training.store import ModelManifest

# ImageInfo field → the DICOM keyword it echoes: identifiers of the image, never of the patient.
DICOM_INFO = {
    "sop_instance_uid": "SOPInstanceUID",
    "modality": "Modality",
    "body_part_examined": "BodyPartExamined",
}


class ImageInfo(BaseModel):
    """What the service read from the upload."""

    format: str = Field(description="png, jpeg or dicom (sniffed from the bytes)")
    width: int
    height: int
    frames: int = 1
    sop_instance_uid: str | None = Field(
        None, description="DICOM only: the source image's SOP Instance UID (no patient data)"
    )
    modality: str | None = Field(None, description="DICOM only: Modality (0008,0060)")
    body_part_examined: str | None = Field(
        None, description="DICOM only: Body Part Examined (0018,0015), when present"
    )

    @classmethod
    def of(cls, upload: ImageUpload) -> ImageInfo:
        dicom: dict[str, str | None] = {}
        if upload.dataset is not None:
            dicom = {
                field: header_value(upload.dataset, keyword) or None
                for field, keyword in DICOM_INFO.items()
            }
        return cls(
            format=upload.format,
            width=upload.width,
            height=upload.height,
            frames=upload.frames,
            **dicom,
        )


class ModelPrediction(Prediction):
    """A prediction (model, version, weights_sha256, probabilities, top class) and the ref the
    request used for it."""

    ref: str = Field(description="the ref as requested, e.g. 'derm:production'")
    architecture: str

    @classmethod
    def of(cls, prediction: Prediction, ref: str, manifest: ModelManifest) -> ModelPrediction:
        return cls(
            **prediction.model_dump(), ref=ref, architecture=manifest.architecture.architecture
        )
