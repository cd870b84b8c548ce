"""Where Grad-CAM looks, clean vs attacked: lesion-mask scores and example heatmap panels.

The paper compares Grad-CAM maps of clean and adversarial images by eye. With lesion masks the
comparison becomes a number: the share of heatmap energy inside the lesion and the pointing game
(is the map's peak on the lesion?), each for clean inputs and for every attack at the headline ε.
A uniform map would put ``lesion area / image area`` of its energy inside, so that share is
reported as the chance level next to the scores.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import keras
import numpy as np
from pydantic import BaseModel

from training.explain.cam import CAMMethod
from training.explain.compare import energy_inside, pointing_game
from training.explain.overlay import overlay
from training.robustness.spec import AttackSpec
from training.stats import wilson_interval

CLEAN = "clean"


class LocalizationScore(BaseModel):
    """Grad-CAM of the true class vs the lesion mask, over n images, for one input condition."""

    condition: str
    epsilon: float | None
    n: int
    empty_maps: int = 0
    energy_inside_mean: float
    energy_inside_ci95: tuple[float, float]
    pointing_game: float
    pointing_game_ci95: tuple[float, float]


class ModelLocalization(BaseModel):
    model: str
    scores: list[LocalizationScore]


class LocalizationReport(BaseModel):
    """Per model, clean and attacked; ``chance_energy_inside`` is the uniform map's share."""

    method: str
    layer: str
    n: int
    chance_energy_inside: float
    models: list[ModelLocalization]


def adversarial_images(
    model: keras.Model,
    attack: AttackSpec,
    epsilon: float,
    seed: int,
    pixels: np.ndarray,
    labels: np.ndarray,
    sample_ids: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """The attack's images, batched like the robustness evaluation (same per-image randomness)."""
    generator = attack.make(epsilon, seed)
    out = np.empty_like(pixels)
    for start in range(0, len(pixels), batch_size):
        batch = slice(start, start + batch_size)
        out[batch] = generator.generate(model, pixels[batch], labels[batch], sample_ids[batch])
    return out


def true_class_maps(
    cam: CAMMethod, model: keras.Model, pixels: np.ndarray, labels: np.ndarray, batch_size: int
) -> np.ndarray:
    """Grad-CAM maps ``(N, h, w)`` of each image's true class."""
    return np.concatenate(
        [
            cam.explain(model, pixels[i : i + batch_size], labels[i : i + batch_size]).maps
            for i in range(0, len(pixels), batch_size)
        ]
    )


def score_maps(
    condition: str, epsilon: float | None, maps: np.ndarray, masks: np.ndarray
) -> LocalizationScore:
    """Energy inside (mean over non-empty maps, normal 95 % interval) and pointing game (Wilson).

    An all-zero map (no positive evidence for the true class, common once an attack succeeds)
    has no energy to place: it is counted in ``empty_maps`` and left out of the energy mean,
    and it misses in the pointing game, which has no peak to point with.
    """
    shares = np.asarray(energy_inside(maps, masks), dtype=np.float64)
    hits = np.asarray(pointing_game(maps, masks), dtype=bool)
    placed = shares[~np.isnan(shares)]
    mean = float(placed.mean()) if len(placed) else float("nan")
    half = 1.96 * float(placed.std(ddof=1)) / np.sqrt(len(placed)) if len(placed) > 1 else 1.0
    return LocalizationScore(
        condition=condition,
        epsilon=epsilon,
        n=len(shares),
        empty_maps=int(len(shares) - len(placed)),
        energy_inside_mean=mean,
        energy_inside_ci95=(max(0.0, mean - half), min(1.0, mean + half)),
        pointing_game=float(hits.mean()),
        pointing_game_ci95=wilson_interval(int(hits.sum()), len(hits)),
    )


def heatmap_panel(
    pixels: np.ndarray,
    columns: dict[str, np.ndarray],
    row_titles: Sequence[str],
    scale: int = 2,
) -> bytes:
    """A PNG grid: the input, then one column of overlays per entry of ``columns`` (titled).

    ``columns`` maps a title (e.g. ``baseline / PGD ε=2``) to maps ``(N, h, w)`` for the rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, titles = len(pixels), ["input", *columns]
    figure, axes = plt.subplots(
        rows, len(titles), figsize=(1.6 * scale * len(titles) / 2, 1.6 * scale * rows / 2 + 0.4),
        squeeze=False,
    )  # fmt: skip
    for r in range(rows):
        tiles = [np.clip(pixels[r], 0, 255).astype(np.uint8)]
        tiles += [overlay(pixels[r], maps[r]) for maps in columns.values()]
        for c, tile in enumerate(tiles):
            axis = axes[r][c]
            axis.imshow(tile, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(titles[c], fontsize=6)
        axes[r][0].set_ylabel(row_titles[r], fontsize=6)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def model_localization(
    model: str,
    maps: dict[str, np.ndarray],
    epsilons: dict[str, float | None],
    masks: np.ndarray,
) -> ModelLocalization:
    """One model's scores for every condition of ``epsilons`` (its ε), from its ``maps``."""
    scores = [
        score_maps(condition, eps, maps[condition], masks) for condition, eps in epsilons.items()
    ]
    return ModelLocalization(model=model, scores=scores)


def chance_energy_inside(masks: np.ndarray) -> float:
    """The share of a uniform map's energy inside the lesions: the level a score must beat."""
    return float(np.mean(masks.reshape(len(masks), -1).mean(axis=1)))
