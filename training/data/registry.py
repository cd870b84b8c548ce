"""One validated description of a dataset (``DatasetSpec``) and the code that loads and splits it.

Configs and the CLI name data only through a spec, so every run records exactly which source,
task, split mode and seed it used. Relative spec paths are relative to ``MEDROBUST_DATA_DIR``
(``training.settings``, shared with the service), which keeps configs portable between machines.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.data.base import LabeledImages, named_classes
from training.data.chestxray14 import load_chestxray14
from training.data.folders import load_image_folders
from training.data.ham10000 import load_ham10000
from training.data.kaggle_dr import load_kaggle_dr
from training.data.medmnist import MedMNISTTask, load_medmnist
from training.data.splits import check_fractions, split_indices, subsample_stratified
from training.settings import CoreSettings

DatasetKind = Literal["ham10000", "kaggle_dr", "chestxray14", "medmnist", "folders"]
#: where the data lives when ``MEDROBUST_DATA_DIR`` is unset: ``shared/data`` beside the checkout
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
# Options that only some kinds understand; giving one to another kind is a config mistake.
_OPTION_KINDS: dict[str, frozenset[str]] = {
    "task": frozenset({"medmnist"}),
    "label_column": frozenset({"medmnist"}),
    "groups_csv": frozenset({"medmnist"}),
    "finding": frozenset({"chestxray14"}),
    "binary": frozenset({"kaggle_dr"}),
    "allow_missing": frozenset({"ham10000", "kaggle_dr", "chestxray14"}),
}
# A name is a JSON key in every answer and a title on every panel: short, printable, distinct.
MAX_CLASSES = 1000
MAX_CLASS_NAME = 64
# Kinds whose adapter can return a source split (HAM10000 only when splits.csv is present).
_SOURCE_SPLIT_KINDS = frozenset({"ham10000", "medmnist"})


def data_dir() -> Path:
    """``$MEDROBUST_DATA_DIR``, else ``../shared/data`` beside the repository, as the Makefile."""
    configured = CoreSettings().data_dir  # read on each call: tests and jobs change it
    if configured is not None:
        return configured.expanduser()
    return DEFAULT_DATA_DIR


def resolve_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one under :func:`data_dir`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else data_dir() / path


class DatasetSpec(BaseModel):
    """Which data to load, how to label it and how to split it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: DatasetKind
    path: str = Field(description="folder (or .npz for medmnist); relative to MEDROBUST_DATA_DIR")
    task: MedMNISTTask | None = None
    label_column: int | None = Field(None, ge=0)
    groups_csv: str | None = Field(None, description="medmnist: id -> patient/lesion CSV")
    finding: str | None = Field(None, description="chestxray14: the positive finding")
    binary: bool | None = Field(None, description="kaggle_dr: referable DR (default) or 5 grades")
    allow_missing: bool | None = Field(None, description="drop (and list) rows without an image")
    class_names: tuple[str, ...] | None = Field(
        None,
        min_length=2,
        max_length=MAX_CLASSES,
        description="names for the classes in label order, used by the stored model and every "
        "answer (default: the adapter's, e.g. '0', '1' for a plain MedMNIST file)",
    )
    split: Literal["source", "group"] = "group"
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0
    limit_per_split: int | None = Field(None, ge=1, description="stratified cap, for quick runs")

    @field_validator("fractions")
    @classmethod
    def _valid_fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        return check_fractions(value)

    @field_validator("class_names")
    @classmethod
    def _valid_class_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = tuple(name.strip() for name in value)
        bad = [
            name
            for name in names
            if not name or len(name) > MAX_CLASS_NAME or not name.isprintable()
        ]
        if bad:
            raise ValueError(
                f"class names must be 1-{MAX_CLASS_NAME} printable characters, got {bad[0]!r}"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"class names must differ; repeated: {repeated}")
        return names

    @model_validator(mode="after")
    def _options_fit_kind(self) -> DatasetSpec:
        for option, kinds in _OPTION_KINDS.items():
            if getattr(self, option) is not None and self.kind not in kinds:
                raise ValueError(f"{option} applies only to kind {sorted(kinds)}, not {self.kind}")
        if self.split == "source" and self.kind not in _SOURCE_SPLIT_KINDS:
            raise ValueError(f"kind {self.kind} ships no source split; use split='group'")
        return self


def load_dataset(spec: DatasetSpec) -> LabeledImages:
    """The images ``spec`` describes, loaded by the adapter for its kind, with the spec's
    ``class_names`` (if any) in place of the adapter's."""
    path = resolve_path(spec.path)
    if spec.kind == "medmnist":  # its class count may come from the names: passed in
        groups_csv = resolve_path(spec.groups_csv) if spec.groups_csv else None
        return load_medmnist(path, spec.task, spec.label_column, groups_csv, spec.class_names)
    data = _load_path_kind(spec, path)
    names = named_classes(f"{path} ({spec.kind})", data.class_names, spec.class_names)
    return data if names == data.class_names else replace(data, class_names=names)


def _load_path_kind(spec: DatasetSpec, path: Path) -> LabeledImages:
    allow_missing = bool(spec.allow_missing)
    if spec.kind == "ham10000":
        return load_ham10000(path, allow_missing=allow_missing)
    if spec.kind == "kaggle_dr":
        binary = True if spec.binary is None else spec.binary
        return load_kaggle_dr(path, binary=binary, allow_missing=allow_missing)
    if spec.kind == "chestxray14":
        finding = spec.finding or "Pneumothorax"
        return load_chestxray14(path, finding=finding, allow_missing=allow_missing)
    return load_image_folders(path)


def splits_for(spec: DatasetSpec, data: LabeledImages) -> dict[str, np.ndarray]:
    """The train/val/test indices of ``data`` under ``spec``'s split mode and size limit."""
    if spec.split == "source":
        splits = split_indices(data, use_source_split=True)
    else:
        splits = split_indices(data, spec.fractions, spec.seed)
    if spec.limit_per_split is None:
        return splits
    return {
        name: subsample_stratified(indices, data.labels, spec.limit_per_split, spec.seed)
        for name, indices in splits.items()
    }
