"""``medrobust reproduce`` on real data, tiny: train, attack, explain, publish, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.tiny_study import RETINAMNIST, tiny_study
from training.reproduce import StudyFolders, load_study, run_study

pytestmark = [pytest.mark.slow, pytest.mark.data]

TINY_STUDY = tiny_study(
    "two tasks, three variants, one epoch: checks the plumbing, not the science",
    variants=[
        {"name": "baseline", "model": {"architecture": "baseline"}},
        {"name": "attention-paper", "model": {"architecture": "attention"}},
        {
            "name": "attention-datta",
            "model": {"architecture": "attention", "attention_variant": "datta-reference"},
        },
    ],
    tasks=[
        {
            "name": "ham10000",
            "title": "HAM10000",
            "dataset": {
                "kind": "ham10000",
                "path": "ham10000_200x150",
                "split": "source",
                "limit_per_split": 24,
            },
            "preprocess": {"input_size": 32},
            "lesion_masks": "ham10000_200x150/lesion_masks_200x150.npz",
        },
        {**RETINAMNIST, "caveat": "tiny"},
    ],
    attacks=[{"name": "fgsm"}, {"name": "pgd", "params": {"steps": 2}}],
    epsilons=[0, 2, 16],
)


def test_study_runs_publishes_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    # One task with lesion masks, three variants: what the CPU test budget allows.
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({**TINY_STUDY, "tasks": TINY_STUDY["tasks"][:1]}))
    config = load_study(config_file)
    folders = StudyFolders(work=tmp_path / "work", out=tmp_path / "results")
    messages: list[str] = []
    run_study(config, folders, config_file.read_text(), log=messages.append)

    assert len(folders.store.names()) == 3
    out = folders.results("ham10000", 0)
    for name in ("robustness.json", "robustness.md", "robustness.png", "models.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "heatmaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "robustness.json").read_text())
    assert report["n"] == 16 and len(report["models"]) == 3
    hashes = {m["weights_sha256"] for m in json.loads((out / "models.json").read_text())}
    assert hashes == {m["weights_sha256"] for m in report["models"]}
    localization = json.loads((out / "localization.json").read_text())
    assert [s["condition"] for s in localization["models"][0]["scores"]] == ["clean", "fgsm", "pgd"]
    assert 0 < localization["chance_energy_inside"] < 1

    summary = (folders.out / "summary.md").read_text()
    assert "attention-datta" in summary and "McNemar" in summary and "pointing game" in summary
    assert "balanced robust accuracy" in summary
    headline = json.loads((folders.out / "summary.json").read_text())
    assert [h["task"] for h in headline] == ["ham10000"]
    pgd = headline[0]["models"][0]["pgd@2"]
    assert 0 <= pgd["balanced_robust_accuracy"] <= 1 and pgd["ci95"][0] <= pgd["robust_accuracy"]
    assert [c["variant"] for c in headline[0]["versus_baseline"]][::4] == [
        "attention-paper",
        "attention-datta",
    ]
    assert (folders.out / "config.yaml").read_text() == config_file.read_text()

    # Run again: every model and evaluation is reused, nothing is retrained.
    again: list[str] = []
    run_study(config, folders, config_file.read_text(), log=again.append)
    assert not any("training" in m for m in again)
    assert sum("reused" in m for m in again) == 3 + 3
    assert len(folders.store.names()) == 3

    # Each model's outcomes are kept on their own: losing one re-attacks that model only, and
    # the published report comes out the same.
    published = json.loads((out / "robustness.json").read_text())
    lost = folders.store.manifest(folders.store.names()[1])
    folders.outcomes("ham10000", 0, lost.name).unlink()
    third: list[str] = []
    run_study(config, folders, config_file.read_text(), log=third.append)
    assert [m for m in third if "attacking" in m] == [
        f"[ham10000 s0] evaluation of {lost.ref}: attacking"
    ]
    again_published = json.loads((out / "robustness.json").read_text())
    assert again_published["results"] == published["results"]


def test_a_changed_recipe_is_not_silently_reused(data_dir: Path, tmp_path: Path) -> None:
    # A task without lesion masks publishes no localization scores.
    study = {**TINY_STUDY, "tasks": TINY_STUDY["tasks"][1:], "variants": TINY_STUDY["variants"][:1]}
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(study))
    folders = StudyFolders(work=tmp_path / "work", out=tmp_path / "results")
    run_study(load_study(config_file), folders, config_file.read_text(), log=lambda _: None)
    out = folders.results("retinamnist", 0)
    assert (out / "heatmaps.png").is_file()
    assert not (out / "localization.json").exists()
    (model,) = json.loads((out / "models.json").read_text())
    assert json.loads((out / "heatmaps.models.json").read_text()) == [model["weights_sha256"]]

    # a panel published by other weights (an earlier run, another machine) is made again
    (out / "heatmaps.models.json").write_text(json.dumps(["0" * 64]))
    redo: list[str] = []
    run_study(load_study(config_file), folders, config_file.read_text(), log=redo.append)
    assert "[retinamnist s0] heatmaps: baseline" in redo and not any("already" in m for m in redo)
    assert json.loads((out / "heatmaps.models.json").read_text()) == [model["weights_sha256"]]
    study["train"] = {**study["train"], "learning_rate": 0.01}
    config_file.write_text(yaml.safe_dump(study))
    with pytest.raises(RuntimeError, match="different spec"):
        run_study(load_study(config_file), folders, config_file.read_text(), log=lambda _: None)
