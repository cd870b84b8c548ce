"""MedMNIST-format ``.npz`` files: small in-memory stand-ins for the paper's three tasks.

The key layout is ``{train,val,test}_images``, ``{split}_labels`` and optionally ``{split}_ids``, at
any resolution, gray ``(N, H, W)`` or RGB ``(N, H, W, 3)``. The three splits are concatenated and
each image keeps its split in ``source_split``, so the source split and a re-split by group are
both available from one load.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from training.data.base import DatasetError, LabeledImages, read_csv_rows
from training.data.chestxray14 import FINDINGS
from training.data.ham10000 import HAM10000_CLASSES
from training.data.kaggle_dr import REFERABLE_CLASSES, REFERABLE_FROM_GRADE

MedMNISTTask = Literal["retina-binary", "pneumothorax", "pneumonia", "derma"]
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
# Column names accepted in ``groups_csv``: the staged NIH labels.csv uses image_index/patient_id,
# the staged HAM10000 splits.csv uses image_id/lesion_id.
ID_COLUMNS: tuple[str, ...] = ("image_index", "image_id")
GROUP_COLUMNS: tuple[str, ...] = ("patient_id", "lesion_id")


def _single(labels: np.ndarray, allowed: int) -> np.ndarray:
    """Labels from an ``(N, 1)`` array whose values must lie in ``0..allowed-1``."""
    if labels.shape[1] != 1:
        raise ValueError(f"expected one label column, got {labels.shape[1]}")
    column = labels[:, 0].astype(np.int64)
    bad = np.flatnonzero((column < 0) | (column >= allowed))
    if bad.size:
        raise ValueError(f"label {labels[bad[0], 0]} at row {bad[0]} is not in 0..{allowed - 1}")
    return column


def _binary_column(labels: np.ndarray, column: int) -> np.ndarray:
    """Column ``column`` of a multi-hot label array, which must hold only 0 and 1."""
    if not 0 <= column < labels.shape[1]:
        raise ValueError(f"label column {column} does not exist in {labels.shape[1]} columns")
    values = labels[:, column].astype(np.int64)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise ValueError(f"label {labels[bad[0], column]} at row {bad[0]} is not 0 or 1")
    return values


_PNEUMOTHORAX = FINDINGS.index("Pneumothorax")  # column 7 in ChestMNIST order
# task -> (class names, maps one split's raw label array to int64 labels or raises ValueError)
TASKS: dict[str, tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]] = {
    "retina-binary": (REFERABLE_CLASSES, lambda y: REFERABLE_FROM_GRADE[_single(y, 5)]),
    "pneumothorax": (
        ("no_pneumothorax", "pneumothorax"),
        lambda y: _binary_column(y, _PNEUMOTHORAX),
    ),
    "pneumonia": (("normal", "pneumonia"), lambda y: _single(y, 2)),
    "derma": (HAM10000_CLASSES, lambda y: _single(y, len(HAM10000_CLASSES))),
}


def load_medmnist(
    npz_path: str | Path,
    task: MedMNISTTask | None = None,
    label_column: int | None = None,
    groups_csv: str | Path | None = None,
) -> LabeledImages:
    """All three splits of a MedMNIST-format file, labelled for ``task``.

    Without a task the labels are taken as they are (class names ``"0"..."K-1"``); a multi-label
    file then needs ``label_column`` to pick one binary column. Groups default to one per image
    (MedMNIST ships no patient ids); ``groups_csv`` maps the ``{split}_ids`` to patient or lesion
    ids so that a re-split can keep each patient in one split.
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise DatasetError(f"{npz_path}: npz file not found")
    if task is not None and label_column is not None:
        raise DatasetError(f"{npz_path}: give task {task!r} or label_column, not both")
    if task is not None and task not in TASKS:
        raise DatasetError(f"{npz_path}: unknown task {task!r}; expected one of {list(TASKS)}")
    with np.load(npz_path) as npz:
        missing = [
            f"{split}_{what}"
            for split in SPLIT_NAMES
            for what in ("images", "labels")
            if f"{split}_{what}" not in npz.files
        ]
        if missing:
            raise DatasetError(f"{npz_path}: missing key(s) {missing}; has {sorted(npz.files)}")
        images = [npz[f"{split}_images"] for split in SPLIT_NAMES]
        raw_labels = [npz[f"{split}_labels"] for split in SPLIT_NAMES]
        has_ids = all(f"{split}_ids" in npz.files for split in SPLIT_NAMES)
        ids = [npz[f"{split}_ids"].astype(str) for split in SPLIT_NAMES] if has_ids else None

    for split, x, y in zip(SPLIT_NAMES, images, raw_labels, strict=True):
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or x.shape[1:] != images[0].shape[1:]:
            raise DatasetError(
                f"{npz_path}: {split}_images is {x.dtype} {x.shape}; expected uint8 (N, H, W) or "
                f"(N, H, W, C) with the shape of train_images {images[0].shape}"
            )
        if y.ndim != 2 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(
                f"{npz_path}: {split}_labels is {y.dtype} {y.shape}; expected integers "
                f"({len(x)}, K)"
            )

    class_names, labels = _labels(npz_path, raw_labels, task, label_column)
    source_split = np.repeat(np.array(SPLIT_NAMES), [len(x) for x in images])
    if groups_csv is not None:
        if ids is None:
            raise DatasetError(f"{npz_path}: groups_csv needs {{train,val,test}}_ids in the npz")
        groups = _groups_from_csv(Path(groups_csv), np.concatenate(ids))
    elif ids is not None:
        groups = np.concatenate(ids)
    else:
        groups = np.arange(len(labels)).astype(str)
    return LabeledImages(
        name=npz_path.stem if task is None else f"{npz_path.stem}_{task}",
        class_names=class_names,
        labels=labels,
        groups=groups,
        arrays=np.concatenate(images),
        source_split=source_split,
    )


def _labels(
    npz_path: Path,
    raw_labels: list[np.ndarray],
    task: str | None,
    label_column: int | None,
) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and the concatenated int64 labels of all splits."""
    if task is not None:
        class_names, convert = TASKS[task]
    elif label_column is not None:
        class_names = ("0", "1")
        convert = partial(_binary_column, column=label_column)
    else:
        count = max(int(y.max(initial=0)) for y in raw_labels) + 1
        class_names = tuple(str(k) for k in range(count))
        convert = partial(_single, allowed=count)
    parts = []
    for split, y in zip(SPLIT_NAMES, raw_labels, strict=True):
        try:
            parts.append(convert(y))
        except ValueError as error:
            raise DatasetError(f"{npz_path}: {split}_labels: {error}") from error
    return class_names, np.concatenate(parts)


def _groups_from_csv(groups_csv: Path, ids: np.ndarray) -> np.ndarray:
    """The group (patient or lesion) of each id, looked up in ``groups_csv``."""
    if not groups_csv.is_file():
        raise DatasetError(f"{groups_csv}: CSV file not found")
    with groups_csv.open(newline="", encoding="utf-8-sig") as handle:
        columns = {name.strip() for name in next(csv.reader(handle), [])}
    id_column = next((c for c in ID_COLUMNS if c in columns), None)
    group_column = next((c for c in GROUP_COLUMNS if c in columns), None)
    if id_column is None or group_column is None:
        # the header is counted, not quoted: a file that is no groups CSV at all (a path typo,
        # or a caller probing the server) must not have its first line echoed into a job record
        raise DatasetError(
            f"{groups_csv}: needs an id column {list(ID_COLUMNS)} and a group column "
            f"{list(GROUP_COLUMNS)}; its header has no such pair among {len(columns)} column(s)"
        )
    rows = read_csv_rows(groups_csv, (id_column, group_column))
    group_of: dict[str, str] = {}
    for line, row in rows:
        if group_of.setdefault(row[id_column], row[group_column]) != row[group_column]:
            raise DatasetError(
                f"{groups_csv}: line {line}: {row[id_column]!r} listed again with another "
                f"{group_column}"
            )
    unknown = [str(i) for i in ids if i not in group_of]
    if unknown:
        raise DatasetError(
            f"{groups_csv}: no {group_column} for id {unknown[0]!r} "
            f"({len(unknown)} of {len(ids)} ids missing)"
        )
    return np.array([group_of[i] for i in ids])
