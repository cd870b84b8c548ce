"""The study's headline: per task, does attention beat the baseline under attack, and how surely.

Built only from the files a task run publishes (``robustness.json``, ``models.json``,
``localization.json``), so the summary can be re-rendered from a results folder alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.reproduce.config import AttackPlan, StudyConfig, TaskSpec
from training.reproduce.localization import LocalizationReport
from training.robustness.results import CellResult, PairComparison, RobustnessReport


@dataclass(frozen=True)
class TaskResult:
    """One published (task, seed): its report, its models' records and lesion scores if any."""

    task: TaskSpec
    seed: int
    models: list[dict[str, Any]]  # models.json: variant, ref, sha256, metrics, spec
    report: RobustnessReport
    localization: LocalizationReport | None

    @classmethod
    def from_folder(
        cls, config: StudyConfig, task: TaskSpec, seed: int, folder: Path
    ) -> TaskResult:
        localization = folder / "localization.json"
        return cls(
            task=task,
            seed=seed,
            models=json.loads((folder / "models.json").read_text()),
            report=RobustnessReport.model_validate_json((folder / "robustness.json").read_text()),
            localization=(
                LocalizationReport.model_validate_json(localization.read_text())
                if localization.is_file()
                else None
            ),
        )

    @property
    def keys(self) -> dict[str, str]:
        """Variant name → the model key used inside the report."""
        return {m["variant"]: m["ref"] for m in self.models}

    def clean_accuracy(self, ref: str) -> float:
        """The model's accuracy on the unattacked images (every cell of the model carries it)."""
        return next(cell.clean_accuracy for cell in self.report.results if cell.model == ref)

    def versus_baseline(self, variant: str, attack: str, epsilon: float) -> dict[str, Any]:
        """``variant`` − first variant (the baseline) on the same images, in points."""
        keys = self.keys
        baseline = self.models[0]["variant"]
        pair = _pair(self.report.comparisons, keys[variant], keys[baseline], attack, epsilon)
        return {
            "attack": attack,
            "epsilon": epsilon,
            "variant": variant,
            "baseline": baseline,
            "robust_accuracy": pair["a"],
            "baseline_robust_accuracy": pair["b"],
            "difference_points": pair["difference"],
            "difference_ci95_points": pair["ci"],
            "relative_difference_percent": pair["relative"],
            "mcnemar_p": pair["p"],
        }

    def headline_json(self, config: StudyConfig) -> dict[str, Any]:
        plan = config.evaluation
        cells = []
        for model in self.models:
            row: dict[str, Any] = {
                "variant": model["variant"],
                "ref": model["ref"],
                "weights_sha256": model["weights_sha256"],
                "test_balanced_accuracy": model["metrics"].get("test", {}).get("balanced_accuracy"),
                "clean_accuracy": self.clean_accuracy(model["ref"]),
            }
            for attack in plan.attacks:
                for epsilon in (plan.typical_epsilon, plan.extreme_epsilon):
                    cell = self.report.cell(model["ref"], attack.name, epsilon)
                    row[f"{attack.name}@{epsilon:g}"] = {
                        "robust_accuracy": cell.robust_accuracy,
                        "ci95": cell.robust_accuracy_ci95,
                        "balanced_robust_accuracy": balanced_robust_accuracy(cell),
                    }
            cells.append(row)
        comparisons = [
            self.versus_baseline(model["variant"], attack.name, epsilon)
            for model in self.models[1:]
            for attack in plan.attacks
            for epsilon in (plan.typical_epsilon, plan.extreme_epsilon)
        ]
        return {
            "study": config.name,
            "task": self.task.name,
            "seed": self.seed,
            "n": self.report.n,
            "models": cells,
            "versus_baseline": comparisons,
        }


def _pair(
    comparisons: list[PairComparison], a: str, b: str, attack: str, epsilon: float
) -> dict[str, Any]:
    """A − B from whichever order the report holds the pair in."""
    for c in comparisons:
        if (c.attack, c.epsilon) != (attack, epsilon) or {c.model_a, c.model_b} != {a, b}:
            continue
        sign = 1.0 if c.model_a == a else -1.0
        low, high = c.difference_ci95_points or (float("nan"), float("nan"))
        acc_a, acc_b = (
            (c.robust_accuracy_a, c.robust_accuracy_b)
            if sign > 0
            else (c.robust_accuracy_b, c.robust_accuracy_a)
        )
        return {
            "a": acc_a,
            "b": acc_b,
            "difference": sign * c.difference_points,
            "ci": (low, high) if sign > 0 else (-high, -low),
            "relative": 100.0 * (acc_a - acc_b) / acc_b if acc_b > 0 else None,
            "p": c.mcnemar_p,
        }
    raise KeyError((a, b, attack, epsilon))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def summary_markdown(config: StudyConfig, results: list[TaskResult]) -> str:
    """Markdown: per task the models' clean and robust accuracy, then attention − baseline."""
    plan = config.evaluation
    typical, extreme = plan.typical_epsilon, plan.extreme_epsilon
    lines = [
        f"# Study `{config.name}`",
        "",
        config.description.strip(),
        "",
        f"Backbone start: {config.weights or 'random (from scratch)'}. Seeds: {config.seeds}.",
        "",
        f"Attacks in raw pixel space [0, 255], ε in pixel units; typical ε = {typical:g}, "
        f"extreme ε = {extreme:g}. Robust accuracy in % with 95 % Wilson intervals; differences "
        "in points with paired 95 % intervals (Agresti–Min) and McNemar's exact p. Balanced "
        "robust accuracy (the mean over classes) is shown under each table: on an imbalanced test "
        "set a model that answers one class everywhere keeps a high plain robust accuracy.",
    ]
    for result in results:
        task, report = result.task, result.report
        lines += ["", f"## {task.title} (`{task.name}`, seed {result.seed}, n = {report.n})", ""]
        if task.caveat:
            lines += [f"> {task.caveat.strip()}", ""]
        header = "| variant | test bal. acc. (full test split) | clean acc. |"
        rule = "|---|---:|---:|"
        for attack in plan.attacks:
            for epsilon in (typical, extreme):
                header += f" {attack.name} ε={epsilon:g} |"
                rule += "---:|"
        lines += [header, rule]
        for model in result.models:
            test = model["metrics"].get("test", {})
            row = f"| {model['variant']} | {_pct(test.get('balanced_accuracy'))} |"
            cells = ""
            for attack in plan.attacks:
                for epsilon in (typical, extreme):
                    cell = report.cell(model["ref"], attack.name, epsilon)
                    low, high = cell.robust_accuracy_ci95
                    cells += f" {_pct(cell.robust_accuracy)} [{_pct(low)}, {_pct(high)}] |"
            lines.append(f"{row} {_pct(result.clean_accuracy(model['ref']))} |{cells}")
        lines += _balanced_lines(result, plan)
        lines += [
            "",
            "| variant − baseline | attack | ε | Δ points [95% CI] | relative % | McNemar p |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for model in result.models[1:]:
            for attack in plan.attacks:
                for epsilon in (typical, extreme):
                    d = result.versus_baseline(model["variant"], attack.name, epsilon)
                    low, high = d["difference_ci95_points"]
                    relative = d["relative_difference_percent"]
                    lines.append(
                        f"| {model['variant']} | {attack.name} | {epsilon:g} "
                        f"| {d['difference_points']:+.1f} [{low:+.1f}, {high:+.1f}] "
                        f"| {'n/a' if relative is None else f'{relative:+.0f}'} "
                        f"| {d['mcnemar_p']:.3g} |"
                    )
        if result.localization is not None:
            lines += _localization_lines(result.localization, result.models)
    return "\n".join(lines) + "\n"


def balanced_robust_accuracy(cell: CellResult) -> float | None:
    """The mean of the per-class robust accuracies: a model that answers one class everywhere
    scores 1 / classes here, however high its plain robust accuracy on an imbalanced test set."""
    per_class = [v for v in cell.per_class_robust_accuracy.values() if v is not None]
    return sum(per_class) / len(per_class) if per_class else None


def _balanced_lines(result: TaskResult, plan: AttackPlan) -> list[str]:
    epsilons = (plan.typical_epsilon, plan.extreme_epsilon)
    show_clean = 0.0 in plan.epsilons
    header = "| variant (balanced robust accuracy %) |" + (" clean |" if show_clean else "")
    rule = "|---|" + ("---:|" if show_clean else "")
    for attack in plan.attacks:
        for epsilon in epsilons:
            header += f" {attack.name} ε={epsilon:g} |"
            rule += "---:|"
    lines = ["", header, rule]
    first = plan.attacks[0].name
    for model in result.models:
        row = f"| {model['variant']} |"
        if show_clean:
            clean = result.report.cell(model["ref"], first, 0.0)
            row += f" {_pct(balanced_robust_accuracy(clean))} |"
        for attack in plan.attacks:
            for epsilon in epsilons:
                cell = result.report.cell(model["ref"], attack.name, epsilon)
                row += f" {_pct(balanced_robust_accuracy(cell))} |"
        lines.append(row)
    return lines


def _localization_lines(loc: LocalizationReport, models: list[dict[str, Any]]) -> list[str]:
    variant_of = {m["ref"]: m["variant"] for m in models}
    lines = [
        "",
        f"Where {loc.method} (true class, `{loc.layer}`) looks, scored against the lesion masks "
        f"on n = {loc.n} images; a uniform map puts {_pct(loc.chance_energy_inside)} % of its "
        "energy inside the lesion. Empty maps (no positive evidence for the true class) are left "
        "out of the energy mean and miss in the pointing game.",
        "",
        "| variant | input | energy inside lesion % [95% CI] | empty maps | "
        "pointing game % [95% CI] |",
        "|---|---|---:|---:|---:|",
    ]
    for model in loc.models:
        for s in model.scores:
            condition = s.condition if s.epsilon is None else f"{s.condition} ε={s.epsilon:g}"
            e_low, e_high = s.energy_inside_ci95
            p_low, p_high = s.pointing_game_ci95
            lines.append(
                f"| {variant_of.get(model.model, model.model)} | {condition} "
                f"| {_pct(s.energy_inside_mean)} [{_pct(e_low)}, {_pct(e_high)}] "
                f"| {s.empty_maps} | {_pct(s.pointing_game)} [{_pct(p_low)}, {_pct(p_high)}] |"
            )
    return lines
