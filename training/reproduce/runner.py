"""Run a study end to end, resumably: train every (task, variant, seed), attack, explain, publish.

Every step leaves its result on disk before the next starts, and is skipped when that result is
already there and was made from the same inputs:

- a trained model is the store entry named ``<study>-<task>-<variant>-s<seed>`` whose recorded
  training spec equals the one the config asks for (a half-finished run resumes from its
  checkpoint directory instead);
- an evaluation is one per-image outcomes file per model in the work folder, reused only when it
  was made for the same model hash and attack spec (so a run stopped after some models keeps
  theirs).

So a study interrupted at any point (a session ending, a machine going away) continues with the
same command, and a finished one re-renders its results folder in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainingSpec
from training.data.ham10000 import load_lesion_masks
from training.data.registry import resolve_path
from training.explain.cam import get_method
from training.model_ref import ModelIdentity
from training.pipeline import prepared_arrays
from training.reproduce.config import StudyConfig, TaskSpec, VariantSpec
from training.reproduce.localization import (
    CLEAN,
    LocalizationReport,
    adversarial_images,
    heatmap_panel,
    localization_report,
    true_class_maps,
)
from training.reproduce.summary import TaskResult, summary_markdown
from training.robustness.render import markdown_table, robustness_curve_png
from training.robustness.report import build_report, join_models
from training.robustness.results import RobustnessReport, ShardResult
from training.robustness.run import evaluate_stored, evaluation_samples
from training.store import ModelManifest, ModelStore, code_version
from training.workflow import train_and_store

Log = Callable[[str], None]


@dataclass(frozen=True)
class StudyFolders:
    """``work``: models, checkpoints, cached outcomes (large, unpublished); ``out``: results."""

    work: Path
    out: Path

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.work / "models")

    def checkpoints(self, model_name: str) -> Path:
        return self.work / "checkpoints" / model_name

    def outcomes(self, task: str, seed: int, model_name: str) -> Path:
        return self.work / "outcomes" / f"{task}-s{seed}" / f"{model_name}.json"

    def results(self, task: str, seed: int) -> Path:
        return self.out / task / f"seed{seed}"


def run_study(
    config: StudyConfig,
    folders: StudyFolders,
    config_text: str,
    tasks: list[str] | None = None,
    log: Log = print,
    overrides: dict[str, Any] | None = None,
) -> list[TaskResult]:
    """Run (or resume) ``tasks`` (default: all) and write the results folder; see module doc.

    Returns every task run published in the folder so far (also by earlier invocations).

    ``config_text`` (the YAML as written) and ``overrides`` (command-line changes to it) are
    published verbatim, so the folder says exactly what ran.
    """
    selected = [config.task(name) for name in tasks] if tasks else config.tasks
    folders.out.mkdir(parents=True, exist_ok=True)
    (folders.out / "config.yaml").write_text(config_text)
    if overrides:
        (folders.out / "overrides.json").write_text(json.dumps(overrides, indent=1))
    published: list[TaskResult] = []  # the config has at least one task and one seed
    for task in selected:
        for seed in config.seeds:
            manifests = [
                ensure_trained(config, task, v, seed, folders, log) for v in config.variants
            ]
            report = ensure_evaluated(config, task, seed, manifests, folders, log)
            publish_task(config, task, seed, manifests, report, folders, log)
            # after every task, not once at the end: a study stopped later keeps this headline
            published = _write_summary(config, folders, log)
    return published


def ensure_trained(
    config: StudyConfig,
    task: TaskSpec,
    variant: VariantSpec,
    seed: int,
    folders: StudyFolders,
    log: Log,
) -> ModelManifest:
    """The stored model of (task, variant, seed), trained (or resumed) first if missing."""
    spec = config.training_spec(task, variant, seed)
    store = folders.store
    if spec.name in store.names():
        manifest = store.manifest(spec.name)
        # Validated again so fields added to TrainingSpec since (with defaults) compare equal.
        if TrainingSpec.model_validate(manifest.training_spec or {}) != spec:
            raise RuntimeError(
                f"{manifest.ref} in {folders.work} was trained from a different spec than the "
                "config now asks for; use a new work folder (or delete that model) to retrain"
            )
        log(f"[{task.name} s{seed}] {variant.name}: stored as {manifest.ref}, reused")
        return manifest
    log(f"[{task.name} s{seed}] {variant.name}: training {spec.name}")
    manifest = train_and_store(spec, store, folders.checkpoints(spec.name), verbose=0)
    test = manifest.metrics.get("test")
    log(
        f"[{task.name} s{seed}] {variant.name}: stored {manifest.ref}, best epoch "
        f"{manifest.best_epoch}/{manifest.epochs_run}"
        + (f", test balanced accuracy {test.balanced_accuracy:.3f}" if test else "")
    )
    return manifest


def ensure_evaluated(
    config: StudyConfig,
    task: TaskSpec,
    seed: int,
    manifests: list[ModelManifest],
    folders: StudyFolders,
    log: Log,
) -> RobustnessReport:
    """The robustness report of the task's models; each model's outcomes are cached on their own."""
    spec = config.evaluation.evaluation_spec(seed)
    parts = []
    for manifest in manifests:
        path = folders.outcomes(task.name, seed, manifest.name)
        wanted = [ModelIdentity.of(manifest)]
        if path.is_file():
            cached = ShardResult.model_validate_json(path.read_text())
            if cached.spec == spec and cached.models == wanted:
                log(f"[{task.name} s{seed}] evaluation of {manifest.ref}: cached outcomes reused")
                parts.append(cached)
                continue
        log(f"[{task.name} s{seed}] evaluation of {manifest.ref}: attacking")
        outcomes = evaluate_stored(
            folders.store,
            [manifest.ref],
            task.dataset,
            spec,
            split="test",
            limit=config.evaluation.limit,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outcomes.model_dump_json())
        parts.append(outcomes)
    return build_report(join_models(parts), code_version())


def publish_task(
    config: StudyConfig,
    task: TaskSpec,
    seed: int,
    manifests: list[ModelManifest],
    report: RobustnessReport,
    folders: StudyFolders,
    log: Log,
) -> None:
    """Write the task's report, tables, curves, heatmap panel, lesion scores and model hashes."""
    out = folders.results(task.name, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(report.model_dump_json(indent=1))
    (out / "robustness.md").write_text(markdown_table(report))
    (out / "robustness.png").write_bytes(robustness_curve_png(report))
    models = [
        {
            "variant": variant.name,
            "ref": manifest.ref,
            "weights_sha256": manifest.weights_sha256,
            "code_version": manifest.code_version,
            "data_fingerprint": manifest.data_fingerprint,
            "best_epoch": manifest.best_epoch,
            "epochs_run": manifest.epochs_run,
            "training_spec": manifest.training_spec,
            "metrics": {k: v.model_dump() for k, v in manifest.metrics.items()},
        }
        for variant, manifest in zip(config.variants, manifests, strict=True)
    ]
    (out / "models.json").write_text(json.dumps(models, indent=1))
    explain_task(config, task, seed, manifests, folders, out, log)
    log(f"[{task.name} s{seed}] results written to {out}")


def explain_task(
    config: StudyConfig,
    task: TaskSpec,
    seed: int,
    manifests: list[ModelManifest],
    folders: StudyFolders,
    out: Path,
    log: Log,
) -> LocalizationReport | None:
    """Grad-CAM clean vs attacked at the typical ε: example panel, and lesion scores if masked."""
    plan = config.evaluation
    cached = out / "localization.json"
    panel = out / "heatmaps.png"
    # the weights the panel was made from: a folder published by other models (an earlier run,
    # another machine) is redone, not reused because its files exist
    stamp = out / "heatmaps.models.json"
    made_from = [m.weights_sha256 for m in manifests]
    current = stamp.is_file() and json.loads(stamp.read_text()) == made_from
    if current and panel.is_file() and (cached.is_file() or task.lesion_masks is None):
        log(f"[{task.name} s{seed}] heatmaps: already written")
        if cached.is_file():
            return LocalizationReport.model_validate_json(cached.read_text())
        return None
    data, indices = evaluation_samples(task.dataset, "test", plan.limit, seed)
    subset = data.subset(indices)
    loaded = [folders.store.load(m.name, str(m.version)) for m in manifests]
    pixels = prepared_arrays(subset, manifests[0].preprocess)
    labels = subset.labels
    cam = get_method(plan.explain)
    conditions: dict[str, float | None] = {CLEAN: None}
    conditions.update({attack.name: plan.typical_epsilon for attack in plan.attacks})
    models = [(ModelIdentity.of(m.manifest), m.model) for m in loaded]
    maps: dict[tuple[str, str], np.ndarray] = {}
    for (identity, model), variant in zip(models, config.variants, strict=True):
        log(f"[{task.name} s{seed}] heatmaps: {variant.name}")
        maps[(identity.key, CLEAN)] = true_class_maps(cam, model, pixels, labels, plan.batch_size)
        for attack in plan.attacks:
            attacked = adversarial_images(
                model, attack, plan.typical_epsilon, seed, pixels, labels, indices, plan.batch_size
            )
            maps[(identity.key, attack.name)] = true_class_maps(
                cam, model, attacked, labels, plan.batch_size
            )
    rows = _panel_rows(labels, plan.panel_images)
    strongest = plan.attacks[-1].name
    columns = {}
    for (identity, _), variant in zip(models, config.variants, strict=True):
        columns[f"{variant.name}\nclean"] = maps[(identity.key, CLEAN)][rows]
        columns[f"{variant.name}\n{strongest} ε={plan.typical_epsilon:g}"] = maps[
            (identity.key, strongest)
        ][rows]
    titles = [f"{data.class_names[labels[r]]} #{indices[r]}" for r in rows]
    panel.write_bytes(heatmap_panel(pixels[rows], columns, titles))
    report = None
    if task.lesion_masks is not None:
        masks = load_lesion_masks(resolve_path(task.lesion_masks), subset.file_paths())
        report = localization_report(cam, models, maps, conditions, masks)
        cached.write_text(report.model_dump_json(indent=1))
    stamp.write_text(json.dumps(made_from, indent=1))
    return report


def _panel_rows(labels: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` images, one per class first (in class order), then the next ones."""
    firsts = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)]
    rest = [i for i in range(len(labels)) if i not in firsts]
    return np.asarray((firsts + rest)[:count], dtype=np.int64)


def _write_summary(config: StudyConfig, folders: StudyFolders, log: Log) -> list[TaskResult]:
    """The headline over every task published so far (also those of earlier invocations)."""
    results = [
        TaskResult.from_folder(config, task, seed, folders.results(task.name, seed))
        for task in config.tasks
        for seed in config.seeds
        if (folders.results(task.name, seed) / "robustness.json").is_file()
    ]
    (folders.out / "summary.md").write_text(summary_markdown(config, results))
    (folders.out / "summary.json").write_text(
        json.dumps([r.headline_json(config) for r in results], indent=1)
    )
    log(f"summary of {len(results)} task runs written to {folders.out / 'summary.md'}")
    return results
