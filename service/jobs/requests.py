"""Job submissions that name training types; validated by the API and again by the worker."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.dicom_node import DicomNode
from training.data.registry import DatasetSpec
from training.robustness.spec import EvaluationSpec


class EvaluationTrust(BaseModel):
    """The evaluation's trust section (``medrobust evaluate --trust``; training/trust/report.py).

    ``certify``: certified accuracy vs L2 radius by randomized smoothing; ``flip``: the
    distribution of the smallest flipping L∞ ε. Both run on a stratified subset of the split
    (``limit`` images: each image costs up to n model calls, or a flip search). n, n0, steps
    and restarts are checked against the ``trust_*`` settings at submission (422 over them).
    """

    model_config = ConfigDict(extra="forbid")

    certify: bool = False
    flip: bool = False
    limit: int = Field(20, ge=1, le=1000, description="stratified images for the section")
    n: int = Field(1000, ge=1, description="certify: estimation samples (≤ trust_max_n)")
    n0: int = Field(100, ge=1, description="certify: selection samples (≤ trust_max_n0)")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="certify: failure probability")
    noise_sigma: float | None = Field(
        None,
        gt=0,
        le=255,
        description="certify: σ in pixel units; required for a model trained without noise",
    )
    steps: int = Field(20, ge=1, description="flip: attack steps per run (≤ trust_max_steps)")
    restarts: int = Field(1, ge=1, description="flip: random restarts per ε (≤ trust_max_restarts)")

    @model_validator(mode="after")
    def _asks_something(self) -> EvaluationTrust:
        if not (self.certify or self.flip):
            raise ValueError("trust asks for nothing: set certify, flip or both")
        return self


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
    trust: EvaluationTrust | None = Field(
        None, description="also write a trust section (GET /jobs/{id}/trust)"
    )


#: a DICOM UID: dot-separated numbers, at most 64 characters (PS3.5 9.1)
DICOM_UID = r"^[0-9]+(\.[0-9]+)*$"
ExplainMethod = Literal["gradcam", "gradcam++"]
#: what the SR records of each prediction's robustness (service/pacs/trust.py)
PacsRobustness = Literal["none", "flip", "certify", "all"]


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
    robustness: PacsRobustness = Field(
        "none",
        description="also record each prediction's robustness in the SR: flip (smallest "
        "flipping ε, L∞ and L2), certify (randomized-smoothing certified L2 radius), all",
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
    robustness: PacsRobustness = "none"
