"""A study variant that is a model *and* a defense: ``baseline+pgd-at`` trains, stores, compares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tests.support.tiny_study import RETINAMNIST, tiny_study
from training.model_ref import NAME_PATTERN
from training.reproduce import StudyFolders, load_study, run_study
from training.reproduce.config import StudyConfig

PGD_AT = {"adversarial": {"method": "pgd", "epsilon": 2, "steps": 2, "ramp_epochs": 1}}

TINY_STUDY = tiny_study(
    "the clean baseline against its PGD-trained twin, one epoch, 16 images",
    variants=[
        {"name": "baseline", "model": {"architecture": "baseline"}},
        {"name": "baseline+pgd-at", "model": {"architecture": "baseline"}, "train": PGD_AT},
    ],
    tasks=[RETINAMNIST],
    attacks=[{"name": "pgd", "params": {"steps": 2}}],
    epsilons=[0, 2],
)


def test_a_defended_variant_gets_a_storable_name_and_its_recipe():
    config = StudyConfig.model_validate(TINY_STUDY)
    clean, defended = (config.training_spec(config.tasks[0], v, 0) for v in config.variants)
    assert defended.name == "tiny-retinamnist-baseline_pgd-at-s0"
    assert NAME_PATTERN.match(defended.name)
    assert defended.train.adversarial is not None and defended.train.adversarial.epsilon == 2
    assert clean.train.adversarial is None
    # "a+b" and "a_b" would share a model name: refused
    twins = [*TINY_STUDY["variants"], {"name": "baseline_pgd-at", "model": {}}]
    with pytest.raises(ValidationError, match="must be unique"):
        StudyConfig.model_validate({**TINY_STUDY, "variants": twins})


def test_the_shipped_cpu_study_compares_pgd_trained_variants():
    config = load_study(Path(__file__).parents[2] / "configs" / "reproduce-cpu.yaml")
    names = [v.name for v in config.variants]
    assert {"baseline+pgd-at", "attention-paper+pgd-at"} <= set(names)
    for variant in config.variants:
        spec = config.training_spec(config.tasks[0], variant, 0)
        assert NAME_PATTERN.match(spec.name)
        assert (spec.train.adversarial is not None) == variant.name.endswith("+pgd-at")


@pytest.mark.slow
@pytest.mark.data
def test_a_pgd_trained_variant_runs_through_the_study(data_dir: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(TINY_STUDY))
    folders = StudyFolders(work=tmp_path / "work", out=tmp_path / "results")
    run_study(load_study(config_file), folders, config_file.read_text(), log=lambda _: None)

    assert sorted(folders.store.names()) == [
        "tiny-retinamnist-baseline-s0",
        "tiny-retinamnist-baseline_pgd-at-s0",
    ]
    models = json.loads((folders.results("retinamnist", 0) / "models.json").read_text())
    defended = models[1]
    assert defended["variant"] == "baseline+pgd-at"
    assert defended["training_spec"]["train"]["adversarial"]["method"] == "pgd"
    assert models[0]["training_spec"]["train"]["adversarial"] is None
    headline = json.loads((folders.out / "summary.json").read_text())
    assert {c["variant"] for c in headline[0]["versus_baseline"]} == {"baseline+pgd-at"}
    assert "baseline+pgd-at" in (folders.out / "summary.md").read_text()
