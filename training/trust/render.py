"""PNG plots of the trust summaries: certified accuracy vs radius, flipped fraction vs ε.

Several models (e.g. noise-trained and not) go side by side as labelled curves, as in Cohen et
al.'s figures. Matplotlib runs on its Agg backend (no display), as in
:mod:`training.robustness.render`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from training.trust.summary import CertifiedAccuracyCurve, FlipDistribution

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _png(draw: Callable[[Axes], None]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    try:
        draw(axes)
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        return buffer.getvalue()
    finally:
        plt.close(figure)


def certified_accuracy_png(curves: Mapping[str, CertifiedAccuracyCurve]) -> bytes:
    """Certified accuracy against L2 radius (pixel units), one solid curve per named model and
    its balanced certified accuracy dashed in the same colour."""

    def draw(axes: Axes) -> None:
        for label, curve in curves.items():
            (line,) = axes.plot(
                curve.radii, curve.certified_accuracy, label=f"{label} (σ={curve.sigma:g})"
            )
            # dashed, same colour: balanced, where a majority-class voter drops to 1/classes
            axes.plot(
                curve.radii, curve.balanced_certified_accuracy, linestyle="--",
                color=line.get_color(),
            )  # fmt: skip
        axes.set_xlabel("L2 radius r (pixels, [0, 255] scale)")
        axes.set_ylabel("certified accuracy at ≥ r (dashed: balanced)")

    return _png(draw)


def flipped_fraction_png(distributions: Mapping[str, FlipDistribution]) -> bytes:
    """Share of correctly classified images flipped at or below ε, one curve per named model."""

    def draw(axes: Axes) -> None:
        for label, dist in distributions.items():
            axes.step(dist.epsilons, dist.flipped_fraction, where="post", label=label)
        norm = next(iter(distributions.values())).norm if distributions else "inf"
        axes.set_xlabel(f"ε (L{'∞' if norm == 'inf' else '2'}, pixels, [0, 255] scale)")
        axes.set_ylabel("flipped fraction (correct images)")

    return _png(draw)
