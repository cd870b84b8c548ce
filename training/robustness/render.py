"""The report for people: a markdown table and a PNG of robust accuracy against ε."""

from __future__ import annotations

import io
from collections import defaultdict

from training.robustness.results import MaskingDiagnostics, PairComparison, RobustnessReport

#: from this largest ε on, the curves' ε axis is logarithmic (linear below 1)
SYMLOG_FROM = 32


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def difference_interval(comparison: PairComparison) -> str:
    """`` [low, high]`` of a pair's difference in points, or nothing for older reports."""
    if comparison.difference_ci95_points is None:
        return ""
    low, high = comparison.difference_ci95_points
    return f" [{low:+.1f}, {high:+.1f}]"


def markdown_table(report: RobustnessReport) -> str:
    """Robust accuracy per (model, attack, ε) with its 95 % interval, then the model pairs."""
    lines = [
        f"Robustness on n={report.n} images; {report.pixel_space}.",
        "",
        *(
            f"- {m.key}: {m.architecture or 'unknown'}"
            f"{f' ({m.attention_variant})' if m.attention_variant else ''}, "
            f"defense: {m.defense or 'none'}, weights sha256 {m.weights_sha256[:12]}…"
            for m in report.models
        ),
        "",
        "| model | attack | ε | clean acc % | robust acc % [95% CI] | attack success % "
        "| mean L∞ | mean L2 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.results:
        low, high = r.robust_accuracy_ci95
        lines.append(
            f"| {r.model} | {r.attack} | {r.epsilon:g} | {_percent(r.clean_accuracy)} "
            f"| {_percent(r.robust_accuracy)} [{_percent(low)}, {_percent(high)}] "
            f"| {_percent(r.attack_success_rate)} | {r.linf_mean:.2f} | {r.l2_mean:.1f} |"
        )
    if report.comparisons:
        lines += [
            "",
            "| attack | ε | A | B | A − B (points) [95% CI] | relative % | A only / B only "
            "| McNemar p |",
            "|---|---:|---|---|---:|---:|---:|---:|",
        ]
        for c in report.comparisons:
            relative = (
                "n/a"
                if c.relative_difference_percent is None
                else (f"{c.relative_difference_percent:+.1f}")
            )
            lines.append(
                f"| {c.attack} | {c.epsilon:g} | {c.model_a} | {c.model_b} "
                f"| {c.difference_points:+.1f}{difference_interval(c)} | {relative} "
                f"| {c.only_a_correct} / {c.only_b_correct} | {c.mcnemar_p:.3g} |"
            )
    return "\n".join(lines + ["", *masking_section(report.masking)]) + "\n"


def masking_section(masking: MaskingDiagnostics) -> list[str]:
    """The gradient-masking checks as markdown lines: each flag, then what was not checked."""
    lines = ['Gradient-masking checks (see the README, "Reading the masking flags"):', ""]
    if masking.flags:
        lines += [f"- ⚠ **{flag.check}**: {flag.message}" for flag in masking.flags]
    else:
        lines.append("- no check fired")
    lines += [f"- not checked: {check} ({why})" for check, why in masking.not_checked.items()]
    return lines


def robustness_curve_png(report: RobustnessReport) -> bytes:
    """Robust accuracy vs ε, one line per model, one panel per attack, 95 % bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_attack: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in report.results:
        by_attack[r.attack][r.model].append(r)
    figure, axes = plt.subplots(
        1, len(by_attack), figsize=(5 * len(by_attack), 4), squeeze=False, sharey=True
    )
    for axis, (attack, per_model) in zip(axes[0], by_attack.items(), strict=True):
        for model, cells in per_model.items():
            cells = sorted(cells, key=lambda c: c.epsilon)
            eps = [c.epsilon for c in cells]
            axis.plot(eps, [c.robust_accuracy for c in cells], marker="o", label=model)
            axis.fill_between(
                eps,
                [c.robust_accuracy_ci95[0] for c in cells],
                [c.robust_accuracy_ci95[1] for c in cells],
                alpha=0.2,
            )
        axis.set_title(attack)
        if max(r.epsilon for r in report.results) >= SYMLOG_FROM:
            axis.set_xscale("symlog", linthresh=1)  # a sanity ε of 64 would squash 1, 2, 4
        axis.set_xlabel("ε (pixel units of 255)")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust accuracy")
    axes[0][-1].legend(fontsize=8)
    flagged = sorted({(flag.check, flag.model) for flag in report.masking.flags})
    if flagged:
        listed = "; ".join(f"{check} ({model})" for check, model in flagged)
        figure.suptitle(f"⚠ gradient-masking flags: {listed}", color="firebrick", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.92) if flagged else (0, 0, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
