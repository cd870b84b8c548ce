"""Robustness evaluation: attack each model over an ε sweep and report what survives.

The unit of work is a *shard*: a range of images evaluated against every (model, attack, ε),
kept as per-image outcomes (:class:`ShardResult`). Shards merge by concatenation, and the report
(:class:`RobustnessReport`) is computed from the merged outcomes alone, so a run split across
workers gives exactly the report of the unsplit run. Random starts are drawn per image from
``(seed, sample_id)`` for the same reason. Keep shard boundaries on multiples of the batch size
(:func:`shard_ranges` does) so every image is also computed in an identical batch.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from training import gradients
from training.attacks import Attack, make_attack
from training.explain.cam import get_method
from training.explain.compare import (
    MapComparison,
    MapComparisonSummary,
    aggregate,
    compare_maps,
)
from training.stats import mcnemar_exact_p, paired_difference_interval, wilson_interval

REPORT_SCHEMA_VERSION = 1
PIXEL_SPACE = "raw pixels in [0, 255]; epsilon in pixel units (epsilon=2 means 2/255)"

ProgressCallback = Callable[[int, int], None]  # (units done, units total)


class AttackSpec(BaseModel):
    """An attack by name with its parameters other than ε (which the sweep supplies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, float | int | bool | str] = Field(default_factory=dict)

    def make(self, epsilon: float, seed: int) -> Attack:
        return make_attack(self.name, epsilon=epsilon, seed=seed, **self.params)


class EvaluationSpec(BaseModel):
    """Which attacks at which ε, in which batches, from which seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attacks: list[AttackSpec] = Field(min_length=1)
    epsilons: list[float] = Field(min_length=1)
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    explain: Literal["gradcam", "gradcam++"] | None = Field(
        None, description="also compare clean vs adversarial maps of the true class"
    )

    @field_validator("epsilons")
    @classmethod
    def _sorted_non_negative(cls, value: list[float]) -> list[float]:
        if any(not np.isfinite(e) or e < 0 for e in value):
            raise ValueError("epsilons must be finite and >= 0")
        return sorted(set(value))

    def validate_attacks(self) -> None:
        """Make every attack once so bad parameters fail before any work starts."""
        for attack in self.attacks:
            for epsilon in self.epsilons:
                attack.make(epsilon, self.seed)


class ModelIdentity(BaseModel):
    """Which model was attacked: enough to find and verify it again."""

    name: str
    version: int
    weights_sha256: str
    architecture: str
    attention_variant: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


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

    def cell(self, model: str, attack: str, epsilon: float) -> CellResult:
        for result in self.results:
            if (result.model, result.attack, result.epsilon) == (model, attack, epsilon):
                return result
        raise KeyError((model, attack, epsilon))


def shard_ranges(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``shards`` contiguous ranges on batch boundaries."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    batches = max(1, -(-n // batch_size))
    per_shard = -(-batches // shards)
    edges = [min(n, i * per_shard * batch_size) for i in range(shards + 1)]
    return [(start, stop) for start, stop in itertools.pairwise(edges) if stop > start]


def evaluate_shard(
    models: Sequence[tuple[ModelIdentity, keras.Model]],
    pixels: np.ndarray,
    labels: np.ndarray,
    sample_ids: np.ndarray,
    class_names: Sequence[str],
    spec: EvaluationSpec,
    dataset_fingerprint: str | None = None,
    progress: ProgressCallback | None = None,
) -> ShardResult:
    """Attack every model on ``pixels`` (prepared, raw [0, 255]) for every attack and ε."""
    spec.validate_attacks()
    labels = np.asarray(labels, dtype=np.int64)
    batches = [slice(i, i + spec.batch_size) for i in range(0, len(pixels), spec.batch_size)]
    attacked_eps = [e for e in spec.epsilons if e > 0]
    total = len(models) * (1 + len(spec.attacks) * len(attacked_eps)) * len(batches)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    cam = get_method(spec.explain) if spec.explain else None
    clean: dict[str, list[int]] = {}
    adversarial: list[AdversarialOutcomes] = []
    for identity, model in models:
        clean_pred = np.empty(len(pixels), dtype=np.int64)
        clean_maps: list[np.ndarray] = []
        for batch in batches:
            clean_pred[batch] = gradients.logits(model, pixels[batch]).argmax(axis=1)
            if cam is not None:
                clean_maps.append(cam.explain(model, pixels[batch], labels[batch]).maps)
            tick()
        clean[identity.key] = clean_pred.tolist()
        for attack_spec, epsilon in itertools.product(spec.attacks, spec.epsilons):
            if epsilon == 0:
                adversarial.append(_unattacked(identity.key, attack_spec.name, clean_pred))
                continue
            attack = attack_spec.make(epsilon, spec.seed)
            outcome = AdversarialOutcomes(
                model=identity.key,
                attack=attack_spec.name,
                epsilon=epsilon,
                predictions=[],
                linf=[],
                l2=[],
                map_comparisons=[] if cam is not None else None,
            )
            for k, batch in enumerate(batches):
                x = pixels[batch]
                x_adv = attack.generate(model, x, labels[batch], sample_ids[batch])
                delta = (x_adv - x).reshape(len(x), -1)
                outcome.predictions += gradients.logits(model, x_adv).argmax(axis=1).tolist()
                outcome.linf += np.abs(delta).max(axis=1).tolist()
                outcome.l2 += np.linalg.norm(delta, axis=1).tolist()
                if cam is not None:
                    adversarial_maps = cam.explain(model, x_adv, labels[batch]).maps
                    outcome.map_comparisons += compare_maps(clean_maps[k], adversarial_maps)
                tick()
            adversarial.append(outcome)
    return ShardResult(
        spec=spec,
        models=[identity for identity, _ in models],
        class_names=list(class_names),
        dataset_fingerprint=dataset_fingerprint,
        sample_ids=[int(i) for i in sample_ids],
        labels=labels.tolist(),
        clean_predictions=clean,
        adversarial=adversarial,
    )


def _unattacked(model: str, attack: str, clean_pred: np.ndarray) -> AdversarialOutcomes:
    zeros = [0.0] * len(clean_pred)
    return AdversarialOutcomes(
        model=model,
        attack=attack,
        epsilon=0.0,
        predictions=clean_pred.tolist(),
        linf=zeros,
        l2=list(zeros),
    )


def merge_shards(shards: Sequence[ShardResult]) -> ShardResult:
    """One ShardResult holding every shard's images, ordered by sample id."""
    if not shards:
        raise ValueError("nothing to merge")
    first = shards[0]
    for shard in shards[1:]:
        same = (shard.spec, shard.models, shard.class_names, shard.dataset_fingerprint) == (
            first.spec,
            first.models,
            first.class_names,
            first.dataset_fingerprint,
        )
        if not same:
            raise ValueError("shards come from different evaluations (spec, models or data differ)")
    ids = np.concatenate([np.asarray(s.sample_ids, dtype=np.int64) for s in shards])
    if len(np.unique(ids)) != len(ids):
        raise ValueError("shards overlap: some sample ids appear twice")
    order = np.argsort(ids, kind="stable")

    def joined(per_shard: Callable[[ShardResult], list]) -> list:
        values = list(itertools.chain.from_iterable(per_shard(s) for s in shards))
        return [values[i] for i in order]

    adversarial = [
        AdversarialOutcomes(
            model=cell.model,
            attack=cell.attack,
            epsilon=cell.epsilon,
            predictions=joined(lambda s, k=k: s.adversarial[k].predictions),
            linf=joined(lambda s, k=k: s.adversarial[k].linf),
            l2=joined(lambda s, k=k: s.adversarial[k].l2),
            map_comparisons=(
                joined(lambda s, k=k: s.adversarial[k].map_comparisons)
                if cell.map_comparisons is not None
                else None
            ),
        )
        for k, cell in enumerate(first.adversarial)
    ]
    return first.model_copy(
        update={
            "sample_ids": joined(lambda s: s.sample_ids),
            "labels": joined(lambda s: s.labels),
            "clean_predictions": {
                key: joined(lambda s, key=key: s.clean_predictions[key])
                for key in first.clean_predictions
            },
            "adversarial": adversarial,
        }
    )


def build_report(outcomes: ShardResult, code_version: str) -> RobustnessReport:
    """The report computed from per-image outcomes (one shard, or merged shards)."""
    labels = np.asarray(outcomes.labels, dtype=np.int64)
    cells: list[CellResult] = []
    correct: dict[tuple[str, str, float], np.ndarray] = {}
    for cell in outcomes.adversarial:
        clean_ok = np.asarray(outcomes.clean_predictions[cell.model]) == labels
        robust_ok = np.asarray(cell.predictions) == labels
        correct[(cell.model, cell.attack, cell.epsilon)] = robust_ok
        cells.append(_cell_result(cell, labels, clean_ok, robust_ok, outcomes.class_names))

    comparisons = []
    keys = [m.key for m in outcomes.models]
    for attack, epsilon in itertools.product(
        [a.name for a in outcomes.spec.attacks], outcomes.spec.epsilons
    ):
        for a, b in itertools.combinations(keys, 2):
            comparisons.append(_compare(a, b, attack, epsilon, correct))

    attack_parameters = [
        spec.make(max(outcomes.spec.epsilons), outcomes.spec.seed).params()
        for spec in outcomes.spec.attacks
    ]
    ids = np.asarray(outcomes.sample_ids, dtype=np.int64)
    return RobustnessReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        code_version=code_version,
        spec=outcomes.spec,
        attack_parameters=attack_parameters,
        models=outcomes.models,
        class_names=outcomes.class_names,
        dataset_fingerprint=outcomes.dataset_fingerprint,
        n=len(labels),
        sample_ids_sha256=hashlib.sha256(ids.tobytes()).hexdigest(),
        results=cells,
        comparisons=comparisons,
    )


def _cell_result(
    cell: AdversarialOutcomes,
    labels: np.ndarray,
    clean_ok: np.ndarray,
    robust_ok: np.ndarray,
    class_names: Sequence[str],
) -> CellResult:
    n = len(labels)
    linf, l2 = np.asarray(cell.linf), np.asarray(cell.l2)
    flipped = clean_ok & ~robust_ok
    per_class = {
        name: (float(robust_ok[labels == k].mean()) if (labels == k).any() else None)
        for k, name in enumerate(class_names)
    }
    return CellResult(
        model=cell.model,
        attack=cell.attack,
        epsilon=cell.epsilon,
        n=n,
        clean_accuracy=float(clean_ok.mean()) if n else 0.0,
        robust_accuracy=float(robust_ok.mean()) if n else 0.0,
        robust_accuracy_ci95=wilson_interval(int(robust_ok.sum()), n),
        initially_correct=int(clean_ok.sum()),
        attack_success_rate=float(flipped.sum() / clean_ok.sum()) if clean_ok.any() else None,
        linf_mean=float(linf.mean()) if n else 0.0,
        linf_median=float(np.median(linf)) if n else 0.0,
        l2_mean=float(l2.mean()) if n else 0.0,
        l2_median=float(np.median(l2)) if n else 0.0,
        per_class_robust_accuracy=per_class,
        map_comparison=aggregate(cell.map_comparisons) if cell.map_comparisons else None,
    )


def _compare(
    a: str, b: str, attack: str, epsilon: float, correct: dict[tuple[str, str, float], np.ndarray]
) -> PairComparison:
    ok_a, ok_b = correct[(a, attack, epsilon)], correct[(b, attack, epsilon)]
    acc_a, acc_b = float(ok_a.mean()), float(ok_b.mean())
    only_a, only_b = int((ok_a & ~ok_b).sum()), int((ok_b & ~ok_a).sum())
    return PairComparison(
        attack=attack,
        epsilon=epsilon,
        model_a=a,
        model_b=b,
        robust_accuracy_a=acc_a,
        robust_accuracy_b=acc_b,
        difference_points=100.0 * (acc_a - acc_b),
        difference_ci95_points=tuple(
            100.0 * bound for bound in paired_difference_interval(only_a, only_b, len(ok_a))
        ),
        relative_difference_percent=100.0 * (acc_a - acc_b) / acc_b if acc_b > 0 else None,
        only_a_correct=only_a,
        only_b_correct=only_b,
        mcnemar_p=mcnemar_exact_p(only_a, only_b),
    )


def evaluate(
    models: Sequence[tuple[ModelIdentity, keras.Model]],
    pixels: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    spec: EvaluationSpec,
    code_version: str,
    dataset_fingerprint: str | None = None,
    sample_ids: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> RobustnessReport:
    """Evaluate in one piece: the report of a single shard holding every image."""
    ids = np.arange(len(pixels)) if sample_ids is None else np.asarray(sample_ids)
    shard = evaluate_shard(
        models, pixels, labels, ids, class_names, spec, dataset_fingerprint, progress
    )
    return build_report(shard, code_version)
