"""From per-image outcomes to the report: merging shards, cells, intervals, pair tests."""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from training.explain.compare import MapComparison, aggregate
from training.robustness.diagnostics import diagnose
from training.robustness.results import (
    AdversarialOutcomes,
    CellResult,
    PairComparison,
    RobustnessReport,
    ShardResult,
)
from training.stats import mcnemar_exact_p, paired_difference_interval, wilson_interval

_Value = TypeVar("_Value")


def _alike(results: Sequence[ShardResult], *fields: str) -> bool:
    """Whether every result has the first one's values of ``fields``."""
    key = operator.attrgetter(*fields)
    return all(key(result) == key(results[0]) for result in results[1:])


def join_models(parts: Sequence[ShardResult]) -> ShardResult:
    """One ShardResult holding every part's models, evaluated separately on the same images.

    ``evaluate_shard`` attacks model after model with per-image randomness that does not depend
    on the other models, so the join equals evaluating them together; it lets a long study keep
    each model's outcomes as soon as they exist instead of all or nothing.
    """
    if not parts:
        raise ValueError("nothing to join")
    first = parts[0]
    if not _alike(parts, "spec", "class_names", "dataset_fingerprint", "sample_ids", "labels"):
        raise ValueError("parts come from different evaluations (spec, images or data differ)")
    keys = [m.key for part in parts for m in part.models]
    if len(set(keys)) != len(keys):
        raise ValueError("parts overlap: some models appear twice")
    return first.model_copy(
        update={
            "models": [m for part in parts for m in part.models],
            "clean_predictions": {
                key: part.clean_predictions[key] for part in parts for key in part.clean_predictions
            },
            "adversarial": [cell for part in parts for cell in part.adversarial],
        }
    )


def merge_shards(shards: Sequence[ShardResult]) -> ShardResult:
    """One ShardResult holding every shard's images, ordered by sample id."""
    if not shards:
        raise ValueError("nothing to merge")
    first = shards[0]
    if not _alike(shards, "spec", "models", "class_names", "dataset_fingerprint"):
        raise ValueError("shards come from different evaluations (spec, models or data differ)")
    ids = np.concatenate([np.asarray(s.sample_ids, dtype=np.int64) for s in shards])
    if len(np.unique(ids)) != len(ids):
        raise ValueError("shards overlap: some sample ids appear twice")
    order = np.argsort(ids, kind="stable")

    def joined(per_shard: Iterable[Sequence[_Value]]) -> list[_Value]:
        values = list(itertools.chain.from_iterable(per_shard))
        return [values[i] for i in order]

    adversarial = []
    for k, cell in enumerate(first.adversarial):
        parts = [s.adversarial[k] for s in shards]
        adversarial.append(
            AdversarialOutcomes(
                model=cell.model,
                attack=cell.attack,
                epsilon=cell.epsilon,
                predictions=joined(p.predictions for p in parts),
                linf=joined(p.linf for p in parts),
                l2=joined(p.l2 for p in parts),
                map_comparisons=(
                    joined(_map_comparisons(p) for p in parts)
                    if cell.map_comparisons is not None
                    else None
                ),
            )
        )
    return first.model_copy(
        update={
            "sample_ids": joined(s.sample_ids for s in shards),
            "labels": joined(s.labels for s in shards),
            "clean_predictions": {
                key: joined(s.clean_predictions[key] for s in shards)
                for key in first.clean_predictions
            },
            "adversarial": adversarial,
        }
    )


def _map_comparisons(outcomes: AdversarialOutcomes) -> list[MapComparison]:
    """A shard's map comparisons, which shards of one spec all have (or none has)."""
    if outcomes.map_comparisons is None:
        raise ValueError(
            f"a shard lacks the map comparisons of {outcomes.model} / {outcomes.attack} "
            f"ε={outcomes.epsilon:g}"
        )
    return outcomes.map_comparisons


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
        masking=diagnose(cells, correct),
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
