"""A variant's record: its heatmaps survive the JSON trip, and it knows what would outdate it."""

from __future__ import annotations

import numpy as np
import yaml

from tests.support.tiny_study import RETINAMNIST, tiny_study
from training.reproduce.config import StudyConfig
from training.reproduce.records import PackedMaps, VariantRecord


def test_packed_maps_keep_a_heatmap_to_float16_precision() -> None:
    maps = np.random.default_rng(0).random((3, 7, 5), dtype=np.float32)
    packed = PackedMaps.model_validate_json(PackedMaps.pack(maps).model_dump_json())
    back = packed.unpack()
    assert back.shape == (3, 7, 5) and back.dtype == np.float32
    # float16 keeps 11 significant bits: rounding a value in [0, 1) moves it by at most 2**-12
    assert np.max(np.abs(back - maps)) <= 2.0**-12


def test_only_the_attack_plan_not_the_headline_epsilon_outdates_an_evaluation() -> None:
    study = tiny_study(
        "plan", [{"name": "baseline", "model": {"architecture": "baseline"}}], [RETINAMNIST],
        [{"name": "fgsm"}], [0, 2, 16],
    )  # fmt: skip
    plan = StudyConfig.model_validate(yaml.safe_load(yaml.safe_dump(study))).evaluation
    record = VariantRecord.model_construct(attack_plan=plan, lesion_masks=None)
    assert record.same_evaluation(plan.model_copy(update={"extreme_epsilon": 2}), None)
    assert not record.same_evaluation(plan.model_copy(update={"epsilons": [0, 2]}), None)
    assert not record.same_evaluation(plan, "ham10000_200x150/lesion_masks_200x150.npz")
