"""What a PACS job reports: per instance analysed or skipped (why), the objects stored, the model.

Shared by the DICOMweb and the DIMSE paths so that both answer in the same shape. Only UIDs,
modalities, reasons and the model's identity (``training.model_ref.ModelIdentity``, as robustness
reports name their models): no patient values.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from service.pacs.results import ResultObjects
from training.model_ref import ModelIdentity


class StoredObject(BaseModel):
    kind: Literal["sr", "sc"]
    sop_class_uid: str
    series_instance_uid: str
    sop_instance_uid: str


class InstanceOutcome(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    modality: str | None = None
    status: Literal["analysed", "skipped"]
    reason: str | None = Field(None, description="why it was skipped")
    stored: list[StoredObject] = Field(default_factory=list)
    robustness: dict[str, Any] | None = Field(
        None, description="the robustness block recorded in the SR (as /predict answers it)"
    )
    robustness_skipped: str | None = Field(None, description="why the SR lacks the block")


def analysed(outcome: InstanceOutcome, results: ResultObjects) -> InstanceOutcome:
    """``outcome`` (the instance's identity) marked analysed: its stored objects and robustness."""
    block = results.robustness
    return outcome.model_copy(
        update={
            "status": "analysed",
            "stored": stored_objects(results),
            "robustness": None if block is None else block.model_dump(mode="json"),
            "robustness_skipped": results.robustness_skipped,
        }
    )


def stored_objects(results: ResultObjects) -> list[StoredObject]:
    """The SR and the SC of one analysed image, as the summary lists them."""
    return [
        StoredObject(
            kind=kind,
            sop_class_uid=str(dataset.SOPClassUID),
            series_instance_uid=str(dataset.SeriesInstanceUID),
            sop_instance_uid=str(dataset.SOPInstanceUID),
        )
        for kind, dataset in (("sr", results.sr), ("sc", results.sc))
    ]


class AnalysisSummary(BaseModel):
    """Every instance seen, analysed or skipped (with the reason), and every object stored."""

    model: ModelIdentity = Field(description="the model every stored object came from")
    method: str
    robustness: str = Field("none", description="the robustness asked for each SR")
    robustness_skipped: str | None = Field(
        None, description="why part of it is computed for no image (e.g. certify, σ policy)"
    )
    seen: int
    analysed: int
    skipped: int
    instances: list[InstanceOutcome]
    stored: list[StoredObject]

    @classmethod
    def build(
        cls, manifest: Any, method: str, outcomes: list[InstanceOutcome], **extra: Any
    ) -> Self:
        """Count ``outcomes``; ``manifest`` is the ``training.store.ModelManifest`` used."""
        analysed = [o for o in outcomes if o.status == "analysed"]
        return cls(
            model=ModelIdentity.of(manifest),
            method=method,
            seen=len(outcomes),
            analysed=len(analysed),
            skipped=len(outcomes) - len(analysed),
            instances=outcomes,
            stored=[s for o in analysed for s in o.stored],
            **extra,
        )
