"""Job submissions that name training types; validated by the API and again by the worker."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.dicom_node import DicomNode
from training.data.registry import DatasetSpec
from training.robustness.spec import EvaluationSpec


class EvaluationRequest(BaseModel):
    """A robustness evaluation: stored models attacked on a dataset split, split into shards."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        min_length=1,
        max_length=8,
        description="model refs NAME[:VERSION|ALIAS]; resolved to fixed versions on submission",
    )
    dataset: DatasetSpec
    evaluation: EvaluationSpec
    split: Literal["train", "val", "test"] = "test"
    limit: int | None = Field(None, ge=1, description="stratified cap on the images")
    shards: int | None = Field(
        None, ge=1, le=64, description="parallel shard tasks; default: the service's setting"
    )


#: a DICOM UID: dot-separated numbers, at most 64 characters (PS3.5 9.1)
DICOM_UID = r"^[0-9]+(\.[0-9]+)*$"
ExplainMethod = Literal["gradcam", "gradcam++"]


class PacsStudyRequest(BaseModel):
    """Analyse one study held by a configured PACS over DICOMweb, storing the SR + SC back.

    The PACS is named, not given as a URL: the service only talks to the DICOMweb endpoints
    its settings list (``MEDROBUST_PACS_DICOMWEB``), so a request cannot point it elsewhere.
    """

    model_config = ConfigDict(extra="forbid")

    pacs: str = Field(min_length=1, max_length=64, description="a configured PACS name")
    study_uid: str = Field(
        min_length=1, max_length=64, pattern=DICOM_UID, description="Study Instance UID"
    )
    model: str = Field(
        min_length=1,
        max_length=200,
        description="model ref NAME[:VERSION|ALIAS]; resolved to a fixed version on submission",
    )
    method: ExplainMethod = Field("gradcam", description="the overlay in the Secondary Capture")
    allow_modality_mismatch: bool = Field(
        False, description="analyse images whose modality/body part the model does not declare"
    )


class DimseRequest(BaseModel):
    """Analyse instances the DIMSE listener received and C-STORE the SR + SC to a destination.

    Submitted by the listener process (never over HTTP); the spooled files are deleted when the
    job ends.
    """

    model_config = ConfigDict(extra="forbid")

    files: list[str] = Field(min_length=1, max_length=10_000, description="spooled Part 10 files")
    source_aet: str | None = Field(None, max_length=16, description="who sent the instances")
    ae_title: str = Field(min_length=1, max_length=16, description="our AE title (calling AE)")
    destination: DicomNode
    model: str = Field(min_length=1, max_length=200)
    method: ExplainMethod = "gradcam"
