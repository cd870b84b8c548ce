"""Calibration images for the parity gate and for int8 quantisation: real images the model is
meant to see, prepared as serving prepares them.

For a stored model trained by this project the gate's images are its own validation split
(re-derived from the manifest's training spec: the same dataset, split mode and seed), since
agreement on the images a model was selected on is what the issue asks for; an int8 artefact's
quantisation ranges come from its training split, so that the gate never judges a quantisation
on the images it was fitted to. Labels are not needed, only the images. A caller that has no
such split (a model stored without a spec, a dataset not on this machine) passes its own fixed set
of real images instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.config import TrainingSpec
from training.data.registry import load_dataset, splits_for
from training.preprocess import PreprocessConfig, prepare_batch, read_image
from training.store import ModelManifest

#: the gate's largest calibration set: enough to resolve 99.9 % (one disagreement in 1000)
CALIBRATION_LIMIT = 1000
#: images an int8 quantisation is calibrated on (NNCF's default subset size: its range
#: estimates settle well before that, and each image costs a forward pass with statistics)
QUANTISATION_LIMIT = 300


class CalibrationUnavailable(RuntimeError):
    """The model's validation split cannot be read here; the message says why."""


@dataclass(frozen=True)
class Calibration:
    """Prepared (N, S, S, 3) pixels and a word on where they came from."""

    pixels: np.ndarray
    source: str

    @classmethod
    def of_images(
        cls, images: Sequence[np.ndarray], preprocess: PreprocessConfig, source: str
    ) -> Calibration:
        """Decoded images (any size) prepared with the model's own ``preprocess``."""
        if not len(images):
            raise ValueError("a calibration set needs at least one image")
        return cls(prepare_batch(images, preprocess), source)


def evenly_spaced(indices: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``indices``, spread over all of them (a split is sorted by index,
    which often follows class or acquisition order, so its first ``limit`` would be biased)."""
    if len(indices) <= limit:
        return indices
    return indices[np.linspace(0, len(indices) - 1, limit).round().astype(int)]


def split_calibration(manifest: ModelManifest, split: str, limit: int) -> Calibration:
    """Up to ``limit`` images of the model's own ``split`` (``train``, ``val``), prepared for it."""
    name = {"val": "validation", "train": "training"}.get(split, split) + " split"
    if not manifest.training_spec:
        raise CalibrationUnavailable(f"{manifest.ref} was stored without a training spec")
    try:
        spec = TrainingSpec.model_validate(manifest.training_spec)
        data = load_dataset(spec.dataset)
        picked = evenly_spaced(splits_for(spec.dataset, data)[split], limit)
        if data.arrays is not None:
            images = [data.arrays[i] for i in picked]
        else:
            images = [read_image(data.file_paths()[i]) for i in picked]
    except (ValueError, OSError) as exc:  # pydantic's ValidationError and DatasetError are too
        raise CalibrationUnavailable(
            f"{manifest.ref}: its {name} cannot be read here: {exc}"
        ) from exc
    if not images:
        raise CalibrationUnavailable(f"{manifest.ref}: its {name} is empty")
    return Calibration.of_images(images, manifest.preprocess, name)


def validation_calibration(manifest: ModelManifest, limit: int = CALIBRATION_LIMIT) -> Calibration:
    """Up to ``limit`` images of the model's own validation split: the parity gate's images."""
    return split_calibration(manifest, "val", limit)


def training_calibration(manifest: ModelManifest, limit: int = QUANTISATION_LIMIT) -> Calibration:
    """Up to ``limit`` images of the model's own training split: what int8 is quantised on."""
    return split_calibration(manifest, "train", limit)
