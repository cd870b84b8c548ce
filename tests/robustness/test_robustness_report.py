"""Robustness evaluation: shards (of images or of models) join into exactly the whole report."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.model_ref import ModelIdentity
from training.models import build_model
from training.robustness.render import markdown_table, robustness_curve_png
from training.robustness.report import build_report, join_models, merge_shards
from training.robustness.run import evaluate, evaluate_shard
from training.robustness.spec import AttackSpec, EvaluationSpec, shard_ranges

pytestmark = pytest.mark.slow
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(7)
    pairs = []
    for name, architecture in (("base", "baseline"), ("att", "attention")):
        model = build_model(architecture, num_classes=3, input_size=32)
        identity = ModelIdentity(
            name=name, version=1, weights_sha256="0" * 64, architecture=architecture
        )
        pairs.append((identity, model))
    return pairs


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(10, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=10)
    return pixels, labels


SPEC = EvaluationSpec(
    attacks=[AttackSpec(name="fgsm"), AttackSpec(name="pgd", params={"steps": 2})],
    epsilons=[0, 4, 16],
    batch_size=4,
    seed=3,
)


def _without_time(report):
    return report.model_dump(exclude={"created_at"})


def test_sharded_evaluation_merges_into_exactly_the_unsharded_report(models, images):
    pixels, labels = images
    ids = np.arange(100, 110)  # dataset indices, not positions
    whole = evaluate(models, pixels, labels, CLASSES, SPEC, "test", "fp", sample_ids=ids)
    ranges = shard_ranges(len(pixels), shards=2, batch_size=SPEC.batch_size)
    assert ranges == [(0, 8), (8, 10)]
    shards = [
        evaluate_shard(models, pixels[a:b], labels[a:b], ids[a:b], CLASSES, SPEC, "fp")
        for a, b in ranges
    ]
    merged = build_report(merge_shards(shards[::-1]), "test")  # order of arrival is irrelevant
    assert _without_time(merged) == _without_time(whole)


def test_models_evaluated_one_by_one_join_into_exactly_the_joint_report(models, images):
    pixels, labels = images
    ids = np.arange(100, 110)
    whole = evaluate(models, pixels, labels, CLASSES, SPEC, "test", "fp", sample_ids=ids)
    parts = [evaluate_shard([m], pixels, labels, ids, CLASSES, SPEC, "fp") for m in models]
    assert _without_time(build_report(join_models(parts), "test")) == _without_time(whole)
    with pytest.raises(ValueError, match="overlap"):
        join_models([parts[0], parts[0]])
    fewer = evaluate_shard(models[1:], pixels[:4], labels[:4], ids[:4], CLASSES, SPEC, "fp")
    with pytest.raises(ValueError, match="different evaluations"):
        join_models([parts[0], fewer])


def test_report_cells_agree_with_their_own_definitions(models, images):
    pixels, labels = images
    report = evaluate(models, pixels, labels, CLASSES, SPEC, "test")
    assert len(report.results) == 2 * 2 * 3
    assert len(report.comparisons) == 1 * 2 * 3
    for cell in report.results:
        low, high = cell.robust_accuracy_ci95
        assert low <= cell.robust_accuracy <= high
        assert cell.linf_mean <= cell.epsilon + 1e-3
        if cell.epsilon == 0:
            assert cell.robust_accuracy == cell.clean_accuracy and cell.l2_mean == 0
        weighted = sum(
            acc * np.sum(labels == k)
            for k, acc in enumerate(cell.per_class_robust_accuracy.values())
            if acc is not None
        ) / len(labels)
        assert weighted == pytest.approx(cell.robust_accuracy)
    for pair in report.comparisons:
        a = report.cell(pair.model_a, pair.attack, pair.epsilon).robust_accuracy
        b = report.cell(pair.model_b, pair.attack, pair.epsilon).robust_accuracy
        assert pair.difference_points == pytest.approx(100 * (a - b))
        assert (pair.only_a_correct - pair.only_b_correct) == round((a - b) * len(labels))
    assert report.attack_parameters[1]["name"] == "pgd"


def test_renderers_produce_a_table_and_a_png(models, images):
    pixels, labels = images
    report = evaluate(models, pixels, labels, CLASSES, SPEC, "test")
    table = markdown_table(report)
    assert table.count("\n| base:1 |") == 6 and "McNemar" in table
    assert robustness_curve_png(report).startswith(b"\x89PNG\r\n\x1a\n")


def test_json_round_trip_keeps_the_report(models, images):
    pixels, labels = images
    report = evaluate(models[:1], pixels[:4], labels[:4], CLASSES, SPEC, "test")
    again = type(report).model_validate_json(report.model_dump_json())
    assert again == report


def test_bad_attack_parameters_fail_before_any_work():
    spec = EvaluationSpec(attacks=[AttackSpec(name="pgd", params={"steps": 0})], epsilons=[4])
    with pytest.raises(ValueError, match="steps"):
        spec.validate_attacks()
    with pytest.raises(ValueError):
        EvaluationSpec(attacks=[AttackSpec(name="fgsm")], epsilons=[-1])


def test_shards_that_overlap_or_differ_are_refused(models, images):
    pixels, labels = images
    one = evaluate_shard(models[:1], pixels[:4], labels[:4], np.arange(4), CLASSES, SPEC)
    with pytest.raises(ValueError, match="overlap"):
        merge_shards([one, one])
    other = evaluate_shard(models[1:], pixels[4:8], labels[4:8], np.arange(4, 8), CLASSES, SPEC)
    with pytest.raises(ValueError, match="different evaluations"):
        merge_shards([one, other])


@pytest.mark.parametrize("n,shards,batch", [(10, 3, 4), (7, 5, 1), (3, 4, 8), (64, 4, 16)])
def test_shard_ranges_cover_everything_on_batch_boundaries(n, shards, batch):
    ranges = shard_ranges(n, shards, batch)
    assert ranges[0][0] == 0 and ranges[-1][1] == n and len(ranges) <= shards
    for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert stop == start and start % batch == 0


def test_grad_cam_comparisons_are_aggregated_and_survive_sharding(models, images):
    pixels, labels = images
    spec = SPEC.model_copy(update={"explain": "gradcam", "attacks": [AttackSpec(name="fgsm")]})
    whole = evaluate(models[:1], pixels, labels, CLASSES, spec, "test")
    shards = [
        evaluate_shard(models[:1], pixels[a:b], labels[a:b], np.arange(a, b), CLASSES, spec)
        for a, b in shard_ranges(len(pixels), 2, spec.batch_size)
    ]
    assert _without_time(build_report(merge_shards(shards), "test")) == _without_time(whole)
    attacked = whole.cell("base:1", "fgsm", 16.0)
    assert attacked.map_comparison is not None and attacked.map_comparison.n == len(pixels)
    assert whole.cell("base:1", "fgsm", 0.0).map_comparison is None
