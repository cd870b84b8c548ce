"""A finished (task, variant, seed), kept beside the published results so a study spans sessions.

A study's work folder (weights, checkpoints) is large and lives only as long as its machine. What a
published task needs of one variant is small: the model's manifest, its per-image attack outcomes,
its Grad-CAM lesion scores and the few heatmaps of the example panel. A :class:`VariantRecord`
holds exactly that and is written into the results folder as soon as the variant is done. A later
run, on another machine with an empty work folder, reuses every record made from the same training
spec and attack plan and trains and attacks only what is missing: the task's report, panel and
lesion scores are composed from the records alone, so a task too long for one session (HAM10000
with five variants under AutoAttack) is finished over several, one committed variant at a time.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from training.config import TrainingSpec
from training.reproduce.config import AttackPlan
from training.reproduce.localization import ModelLocalization
from training.robustness.results import ShardResult
from training.store import ModelManifest

#: fields of the attack plan that change no record (only how the summary reads the results)
_HEADLINE_ONLY = {"extreme_epsilon"}


class PackedMaps(BaseModel):
    """Heatmaps ``(N, h, w)`` as base64 float16: a panel's maps in a few kilobytes of JSON."""

    shape: tuple[int, int, int]
    float16_base64: str

    @classmethod
    def pack(cls, maps: np.ndarray) -> PackedMaps:
        n, h, w = maps.shape
        data = np.ascontiguousarray(maps, dtype="<f2").tobytes()
        return cls(shape=(n, h, w), float16_base64=base64.b64encode(data).decode("ascii"))

    def unpack(self) -> np.ndarray:
        raw = np.frombuffer(base64.b64decode(self.float16_base64), dtype="<f2")
        return raw.reshape(self.shape).astype(np.float32)


class VariantExplanation(BaseModel):
    """Grad-CAM of one model on the task's attacked images, clean and at the typical ε.

    ``panel_rows`` index the evaluation's images; the panel shows their maps clean and under
    ``panel_attack`` (the plan's last, strongest attack).
    """

    method: str
    layer: str
    panel_rows: list[int]
    panel_attack: str
    panel_clean: PackedMaps
    panel_attacked: PackedMaps
    localization: ModelLocalization | None = None
    chance_energy_inside: float | None = Field(
        None, description="a uniform map's share inside the lesions (with lesion masks only)"
    )


class VariantRecord(BaseModel):
    """What the task's published results need of one variant; see the module docstring."""

    schema_version: int = 1
    variant: str
    manifest: ModelManifest
    attack_plan: AttackPlan
    lesion_masks: str | None = None
    outcomes: ShardResult
    explanation: VariantExplanation

    def same_training(self, spec: TrainingSpec) -> bool:
        """Made by a model trained from ``spec`` (validated again, so fields added to
        TrainingSpec since, with their defaults, compare equal)."""
        return TrainingSpec.model_validate(self.manifest.training_spec or {}) == spec

    def same_evaluation(self, plan: AttackPlan, lesion_masks: str | None) -> bool:
        """Attacked and explained as ``plan`` and the task's lesion masks ask."""
        return self.lesion_masks == lesion_masks and self.attack_plan.model_dump(
            exclude=_HEADLINE_ONLY
        ) == plan.model_dump(exclude=_HEADLINE_ONLY)


def read_record(path: Path) -> VariantRecord | None:
    """The record at ``path``, or None if there is none yet."""
    return VariantRecord.model_validate_json(path.read_text()) if path.is_file() else None
