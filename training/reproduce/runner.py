"""Run a study end to end, resumably: train every (task, variant, seed), attack, explain, publish.

Every step leaves its result on disk before the next starts, and is skipped when that result is
already there and was made from the same inputs:

- a finished variant is a :class:`~training.reproduce.records.VariantRecord` in the results folder
  (``<task>/seed<seed>/variants/<variant>.json``: manifest, per-image attack outcomes, Grad-CAM
  scores and panel maps), reused when its training spec and attack plan are the config's. The
  task's published files are composed from the records alone, so a results folder committed by
  one session lets the next, on a fresh machine, go on with the variants still missing;
- within a session, a trained model is the store entry named ``<study>-<task>-<variant>-s<seed>``
  in the work folder whose recorded training spec equals the one the config asks for (a
  half-finished run resumes from its checkpoint directory instead), and a model's attack outcomes
  are cached there too, reused only when made for the same model hash and attack spec.

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
    chance_energy_inside,
    heatmap_panel,
    model_localization,
    true_class_maps,
)
from training.reproduce.records import PackedMaps, VariantExplanation, VariantRecord, read_record
from training.reproduce.summary import TaskResult, summary_markdown
from training.robustness.render import markdown_table, robustness_curve_png
from training.robustness.report import build_report, join_models
from training.robustness.results import ShardResult
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

    def record(self, task: str, seed: int, variant: str) -> Path:
        return self.results(task, seed) / "variants" / f"{variant}.json"


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
            records = [ensure_record(config, task, v, seed, folders, log) for v in config.variants]
            publish_task(config, task, seed, records, folders, log)
            # after every task, not once at the end: a study stopped later keeps this headline
            published = _write_summary(config, folders, log)
    return published


def ensure_record(
    config: StudyConfig,
    task: TaskSpec,
    variant: VariantSpec,
    seed: int,
    folders: StudyFolders,
    log: Log,
) -> VariantRecord:
    """The finished (task, variant, seed): its published record, or trained, attacked and
    explained now (from what the work folder already holds) and recorded."""
    path = folders.record(task.name, seed, variant.name)
    spec = config.training_spec(task, variant, seed)
    record = read_record(path)
    if record is not None:
        if not record.same_training(spec):
            raise RuntimeError(
                f"{path} was made by a model trained from a different spec than the config now "
                "asks for; use a new results folder (or delete that record) to redo it"
            )
        if record.same_evaluation(config.evaluation, task.lesion_masks):
            log(f"[{task.name} s{seed}] {variant.name}: record of {record.manifest.ref} reused")
            return record
        log(f"[{task.name} s{seed}] {variant.name}: attack plan changed since its record")
    manifest = ensure_trained(config, task, variant, seed, folders, log)
    record = VariantRecord(
        variant=variant.name,
        manifest=manifest,
        attack_plan=config.evaluation,
        lesion_masks=task.lesion_masks,
        outcomes=ensure_evaluated(config, task, seed, manifest, folders, log),
        explanation=explain_model(config, task, seed, manifest, folders, log),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.model_dump_json())
    log(f"[{task.name} s{seed}] {variant.name}: recorded in {path}")
    return record


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
    manifest: ModelManifest,
    folders: StudyFolders,
    log: Log,
) -> ShardResult:
    """The model's per-image attack outcomes, cached in the work folder on their own."""
    spec = config.evaluation.evaluation_spec(seed)
    path = folders.outcomes(task.name, seed, manifest.name)
    if path.is_file():
        cached = ShardResult.model_validate_json(path.read_text())
        if cached.spec == spec and cached.models == [ModelIdentity.of(manifest)]:
            log(f"[{task.name} s{seed}] evaluation of {manifest.ref}: cached outcomes reused")
            return cached
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
    return outcomes


def explain_model(
    config: StudyConfig,
    task: TaskSpec,
    seed: int,
    manifest: ModelManifest,
    folders: StudyFolders,
    log: Log,
) -> VariantExplanation:
    """Grad-CAM of the true class, clean and under every attack at the typical ε, on the
    evaluation's images: the panel rows' maps, and lesion scores where the task has masks."""
    plan = config.evaluation
    log(f"[{task.name} s{seed}] heatmaps of {manifest.ref}")
    data, indices = evaluation_samples(task.dataset, "test", plan.limit, seed)
    subset = data.subset(indices)
    model = folders.store.load(manifest.name, str(manifest.version)).model
    pixels = prepared_arrays(subset, manifest.preprocess)
    labels = subset.labels
    cam = get_method(plan.explain)
    maps = {CLEAN: true_class_maps(cam, model, pixels, labels, plan.batch_size)}
    for attack in plan.attacks:
        attacked = adversarial_images(
            model, attack, plan.typical_epsilon, seed, pixels, labels, indices, plan.batch_size
        )
        maps[attack.name] = true_class_maps(cam, model, attacked, labels, plan.batch_size)
    rows = _panel_rows(labels, plan.panel_images)
    strongest = plan.attacks[-1].name
    explanation = VariantExplanation(
        method=cam.name,
        layer=cam.layer,
        panel_rows=rows.tolist(),
        panel_attack=strongest,
        panel_clean=PackedMaps.pack(maps[CLEAN][rows]),
        panel_attacked=PackedMaps.pack(maps[strongest][rows]),
    )
    if task.lesion_masks is None:
        return explanation
    masks = load_lesion_masks(resolve_path(task.lesion_masks), subset.file_paths())
    epsilons: dict[str, float | None] = {CLEAN: None}
    epsilons.update({attack.name: plan.typical_epsilon for attack in plan.attacks})
    identity = ModelIdentity.of(manifest)
    return explanation.model_copy(
        update={
            "localization": model_localization(identity.key, maps, epsilons, masks),
            "chance_energy_inside": chance_energy_inside(masks),
        }
    )


def publish_task(
    config: StudyConfig,
    task: TaskSpec,
    seed: int,
    records: list[VariantRecord],
    folders: StudyFolders,
    log: Log,
) -> None:
    """Write the task's report, tables, curves, heatmap panel, lesion scores and model hashes,
    from its variants' records alone (no model is loaded)."""
    out = folders.results(task.name, seed)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(join_models([r.outcomes for r in records]), code_version())
    (out / "robustness.json").write_text(report.model_dump_json(indent=1))
    (out / "robustness.md").write_text(markdown_table(report))
    (out / "robustness.png").write_bytes(robustness_curve_png(report))
    models = [
        {
            "variant": record.variant,
            "ref": record.manifest.ref,
            "weights_sha256": record.manifest.weights_sha256,
            "code_version": record.manifest.code_version,
            "data_fingerprint": record.manifest.data_fingerprint,
            "best_epoch": record.manifest.best_epoch,
            "epochs_run": record.manifest.epochs_run,
            "training_spec": record.manifest.training_spec,
            "metrics": {k: v.model_dump() for k, v in record.manifest.metrics.items()},
        }
        for record in records
    ]
    (out / "models.json").write_text(json.dumps(models, indent=1))
    (out / "heatmaps.png").write_bytes(_panel(config, task, seed, records))
    localization = _localization(records)
    if localization is not None:
        (out / "localization.json").write_text(localization.model_dump_json(indent=1))
    log(f"[{task.name} s{seed}] results written to {out}")


def _panel(config: StudyConfig, task: TaskSpec, seed: int, records: list[VariantRecord]) -> bytes:
    """The example panel: each row an image, each variant's clean and attacked heatmaps."""
    rows = records[0].explanation.panel_rows
    if any(r.explanation.panel_rows != rows for r in records):
        raise RuntimeError(f"{task.name}: the variants' records show different panel images")
    data, indices = evaluation_samples(task.dataset, "test", config.evaluation.limit, seed)
    subset = data.subset(indices[rows])
    pixels = prepared_arrays(subset, records[0].manifest.preprocess)
    epsilon = config.evaluation.typical_epsilon
    columns = {}
    for record in records:
        explanation = record.explanation
        columns[f"{record.variant}\n{CLEAN}"] = explanation.panel_clean.unpack()
        attacked = f"{record.variant}\n{explanation.panel_attack} ε={epsilon:g}"
        columns[attacked] = explanation.panel_attacked.unpack()
    titles = [
        f"{data.class_names[label]} #{index}"
        for label, index in zip(subset.labels, indices[rows], strict=True)
    ]
    return heatmap_panel(pixels, columns, titles)


def _localization(records: list[VariantRecord]) -> LocalizationReport | None:
    """The lesion scores of every variant, or None for a task without lesion masks."""
    first = records[0].explanation
    if first.localization is None or first.chance_energy_inside is None:
        return None
    scored = [r.explanation.localization for r in records]
    return LocalizationReport(
        method=first.method,
        layer=first.layer,
        n=first.localization.scores[0].n,
        chance_energy_inside=first.chance_energy_inside,
        models=[s for s in scored if s is not None],
    )


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
