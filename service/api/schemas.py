"""Response shapes shared by several routes. Every model-derived answer names the model, its
version and its weights' sha256."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydicom.dataset import Dataset

from service.api.images import ImageUpload
from training.dicom import header_value
from training.predict import Prediction
from training.runtimes import KERAS, ServingForward
from training.store import ModelManifest
from training.trust.answer import RobustnessBlock


class DicomInfo(BaseModel):
    """What identifies a DICOM source image, so results can be matched to it: image identifiers
    and acquisition facts, never patient values."""

    sop_instance_uid: str | None = Field(description="SOP Instance UID (0008,0018)")
    modality: str | None = Field(description="Modality (0008,0060)")
    body_part_examined: str | None = Field(description="Body Part Examined (0018,0015)")

    @classmethod
    def of(cls, dataset: Dataset) -> DicomInfo:
        return cls(
            sop_instance_uid=header_value(dataset, "SOPInstanceUID") or None,
            modality=header_value(dataset, "Modality") or None,
            body_part_examined=header_value(dataset, "BodyPartExamined") or None,
        )


class ImageInfo(BaseModel):
    """What the service read from the upload."""

    format: str = Field(description="png, jpeg or dicom (sniffed from the bytes)")
    width: int
    height: int
    frames: int = 1
    dicom: DicomInfo | None = Field(None, description="DICOM input only")

    @classmethod
    def of(cls, upload: ImageUpload) -> ImageInfo:
        return cls(
            format=upload.format,
            width=upload.width,
            height=upload.height,
            frames=upload.frames,
            dicom=DicomInfo.of(upload.dataset) if upload.dataset is not None else None,
        )


class ModelPrediction(Prediction):
    """A prediction (model, version, weights_sha256, probabilities, top class) and the ref the
    request used for it."""

    ref: str = Field(description="the ref as requested, e.g. 'derm:production'")
    architecture: str
    runtime: str = Field(
        KERAS,
        description="what computed the probabilities: keras, keras-bf16, openvino, openvino-bf16 "
        "or openvino-int8",
    )
    runtime_artefact_sha256: str | None = Field(
        None, description="sha256 of the runtime's converted artefact (e.g. the OpenVINO IR)"
    )
    runtime_requested: str | None = Field(
        None,
        description="the configured runtime, only when another one answered (its gate failed, "
        "or it cannot run here; the server's log says why)",
    )
    robustness: RobustnessBlock | None = Field(
        None, description="with robustness=flip|certify|all: how far this prediction holds"
    )

    @classmethod
    def of(
        cls,
        prediction: Prediction,
        ref: str,
        manifest: ModelManifest,
        robustness: RobustnessBlock | None = None,
        forward: ServingForward | None = None,
    ) -> ModelPrediction:
        """``forward``: the serving runtime that computed ``prediction`` (None: Keras fp32)."""
        return cls(
            **prediction.model_dump(),
            ref=ref,
            architecture=manifest.architecture.architecture,
            robustness=robustness,
            runtime=forward.runtime if forward else KERAS,
            runtime_artefact_sha256=forward.artefact_sha256 if forward else None,
            runtime_requested=(
                forward.requested if forward and forward.requested != forward.runtime else None
            ),
        )
