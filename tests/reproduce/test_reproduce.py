"""``medrobust reproduce`` on real data, tiny: train, attack, explain, publish, resume."""

from __future__ import annotations

import json
import shutil
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

    # Each variant is recorded beside the results: its manifest, outcomes and heatmaps.
    records = sorted((out / "variants").iterdir())
    assert [r.name for r in records] == [
        "attention-datta.json",
        "attention-paper.json",
        "baseline.json",
    ]

    # Run again: every record is reused; nothing is trained, attacked or explained.
    again: list[str] = []
    run_study(config, folders, config_file.read_text(), log=again.append)
    assert not any(word in m for m in again for word in ("training", "attacking", "heatmaps of"))
    assert sum("record of" in m and "reused" in m for m in again) == 3
    published = json.loads((out / "robustness.json").read_text())
    panel = (out / "heatmaps.png").read_bytes()

    # A lost record is made again from what the work folder holds: that model is not retrained,
    # and with its cached outcomes lost too, it alone is attacked again; the report is the same.
    lost = folders.store.manifest(folders.store.names()[1])
    lost_variant = json.loads((out / "models.json").read_text())
    (variant,) = [m["variant"] for m in lost_variant if m["ref"] == lost.ref]
    folders.record("ham10000", 0, variant).unlink()
    folders.outcomes("ham10000", 0, lost.name).unlink()
    third: list[str] = []
    run_study(config, folders, config_file.read_text(), log=third.append)
    assert not any("training" in m for m in third)
    assert [m for m in third if "attacking" in m or "heatmaps of" in m] == [
        f"[ham10000 s0] evaluation of {lost.ref}: attacking",
        f"[ham10000 s0] heatmaps of {lost.ref}",
    ]
    assert json.loads((out / "robustness.json").read_text())["results"] == published["results"]

    # Another session on a fresh machine: the work folder (weights, checkpoints, cached
    # outcomes) is gone, the committed results folder is all there is. Nothing is redone and
    # the published files come out the same, panel and lesion scores included.
    scores = (out / "localization.json").read_text()
    shutil.rmtree(folders.work)
    fresh: list[str] = []
    run_study(config, folders, config_file.read_text(), log=fresh.append)
    assert not any(word in m for m in fresh for word in ("training", "attacking", "heatmaps of"))
    assert not folders.work.exists() or not folders.store.names()
    assert json.loads((out / "robustness.json").read_text())["results"] == published["results"]
    assert (out / "heatmaps.png").read_bytes() == panel
    assert (out / "localization.json").read_text() == scores


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

    # A changed attack plan redoes the record (the model is reused); a changed headline ε alone
    # changes no record.
    study["evaluation"] = {**study["evaluation"], "extreme_epsilon": 2}
    config_file.write_text(yaml.safe_dump(study))
    same: list[str] = []
    run_study(load_study(config_file), folders, config_file.read_text(), log=same.append)
    assert any("record of" in m and "reused" in m for m in same)
    study["evaluation"] = {**study["evaluation"], "panel_images": 1}
    config_file.write_text(yaml.safe_dump(study))
    redo: list[str] = []
    run_study(load_study(config_file), folders, config_file.read_text(), log=redo.append)
    assert "[retinamnist s0] baseline: attack plan changed since its record" in redo
    assert not any("training" in m for m in redo)
    (record,) = (out / "variants").iterdir()
    assert len(json.loads(record.read_text())["explanation"]["panel_rows"]) == 1

    # A changed training recipe is refused, whether its model is in the work folder or not.
    study["train"] = {**study["train"], "learning_rate": 0.01}
    config_file.write_text(yaml.safe_dump(study))
    with pytest.raises(RuntimeError, match="different spec"):
        run_study(load_study(config_file), folders, config_file.read_text(), log=lambda _: None)
    shutil.rmtree(folders.work)
    with pytest.raises(RuntimeError, match="different spec"):
        run_study(load_study(config_file), folders, config_file.read_text(), log=lambda _: None)
