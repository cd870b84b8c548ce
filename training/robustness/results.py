"""The evaluation's JSON records: per-image outcomes, report cells, pair comparisons, report."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from training.explain.compare import MapComparison, MapComparisonSummary
from training.model_ref import ModelIdentity
from training.robustness.spec import PIXEL_SPACE, REPORT_SCHEMA_VERSION, EvaluationSpec


class AdversarialOutcomes(BaseModel):
    """Per-image outcomes of one (model, attack, ε)."""

    model: str
    attack: str
    epsilon: float
    predictions: list[int]
    linf: list[float]
    l2: list[float]
    map_comparisons: list[MapComparison] | None = None


class ShardResult(BaseModel):
    """Per-image outcomes of a shard; JSON-safe so workers can hand it over a queue."""

    schema_version: int = REPORT_SCHEMA_VERSION
    spec: EvaluationSpec
    models: list[ModelIdentity]
    class_names: list[str]
    dataset_fingerprint: str | None = None
    sample_ids: list[int]
    labels: list[int]
    clean_predictions: dict[str, list[int]]
    adversarial: list[AdversarialOutcomes]


class CellResult(BaseModel):
    """One (model, attack, ε) cell of the report."""

    model: str
    attack: str
    epsilon: float
    n: int
    clean_accuracy: float
    robust_accuracy: float
    robust_accuracy_ci95: tuple[float, float]
    initially_correct: int
    attack_success_rate: float | None = Field(
        description="share of initially-correct images the attack flips; None if none correct"
    )
    linf_mean: float
    linf_median: float
    l2_mean: float
    l2_median: float
    per_class_robust_accuracy: dict[str, float | None]
    map_comparison: MapComparisonSummary | None = None


class PairComparison(BaseModel):
    """Model A vs model B on the same images under the same (attack, ε)."""

    attack: str
    epsilon: float
    model_a: str
    model_b: str
    robust_accuracy_a: float
    robust_accuracy_b: float
    difference_points: float = Field(description="(A - B) in percentage points")
    difference_ci95_points: tuple[float, float] | None = Field(
        None, description="95 % interval of (A - B) in points, paired (Agresti-Min)"
    )
    relative_difference_percent: float | None = Field(description="(A - B) / B in %")
    only_a_correct: int
    only_b_correct: int
    mcnemar_p: float


Check = Literal[
    "single_step_stronger",
    "black_box_stronger",
    "accuracy_rises_with_epsilon",
    "not_zero_at_huge_epsilon",
    "pgd_apgd_gap",
]
CHECKS: tuple[Check, ...] = (
    "single_step_stronger",
    "black_box_stronger",
    "accuracy_rises_with_epsilon",
    "not_zero_at_huge_epsilon",
    "pgd_apgd_gap",
)


class MaskingFlag(BaseModel):
    """One symptom, with the numbers that raised it."""

    check: Check
    model: str
    epsilon: float
    message: str = Field(description="the finding in one sentence, with its numbers")
    evidence: dict[str, float | int | str]


class MaskingDiagnostics(BaseModel):
    """The gradient-masking checks' outcome for one report (see
    :mod:`training.robustness.diagnostics`): what fired, and what could not be checked."""

    flags: list[MaskingFlag] = Field(default_factory=list)
    not_checked: dict[str, str] = Field(
        default_factory=dict, description="check -> why the evaluation could not run it"
    )


class RobustnessReport(BaseModel):
    """The versioned, JSON-serialisable result of an evaluation; enough to rerun it."""

    schema_version: int = REPORT_SCHEMA_VERSION
    created_at: str
    code_version: str
    pixel_space: str = PIXEL_SPACE
    spec: EvaluationSpec
    attack_parameters: list[dict[str, float | int | bool | str]]
    models: list[ModelIdentity]
    class_names: list[str]
    dataset_fingerprint: str | None
    n: int
    sample_ids_sha256: str
    results: list[CellResult]
    comparisons: list[PairComparison]
    masking: MaskingDiagnostics = Field(
        default_factory=MaskingDiagnostics,
        description="gradient-masking checks (empty in reports of schema version 1)",
    )

    def cell(self, model: str, attack: str, epsilon: float) -> CellResult:
        for result in self.results:
            if (result.model, result.attack, result.epsilon) == (model, attack, epsilon):
                return result
        raise KeyError((model, attack, epsilon))
