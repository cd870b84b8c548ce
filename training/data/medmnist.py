"""MedMNIST-format ``.npz`` files, as MedMNIST publishes them, for any 2D task.

The key layout is ``{train,val,test}_images``, ``{split}_labels`` and optionally ``{split}_ids``, at
any resolution, gray ``(N, H, W)`` or RGB ``(N, H, W, 3)``. The three splits are concatenated and
each image keeps its split in ``source_split``, so the source split and a re-split by group are
both available from one load.

No list of MedMNIST tasks is needed: labels are read as the file holds them, ``(N,)`` or
``(N, 1)`` class indices (binary, multi-class or ordinal files such as BreastMNIST, PathMNIST,
RetinaMNIST), with class names from the spec's ``class_names`` (else ``"0"`` … ``"K-1"``). A
multi-label file ``(N, K)`` (ChestMNIST) is read one finding at a time, via ``label_column``:
the training pipeline fits one softmax over mutually exclusive classes, so training all K
findings at once would silently optimise the wrong loss, and is refused with that reason.
``TASKS`` only adds named recipes for the paper's tasks (a relabelling such as retina grades →
referable, or a fixed column), not a whitelist.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from training.data.base import DatasetError, LabeledImages, named_classes, read_csv_rows
from training.data.chestxray14 import FINDINGS
from training.data.ham10000 import HAM10000_CLASSES
from training.data.kaggle_dr import REFERABLE_CLASSES, REFERABLE_FROM_GRADE
from training.data.npz import ArrayHeader, npz_headers, read_member

MedMNISTTask = Literal["retina-binary", "pneumothorax", "pneumonia", "derma"]
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
# Column names accepted in ``groups_csv``: the staged NIH labels.csv uses image_index/patient_id,
# the staged HAM10000 splits.csv uses image_id/lesion_id.
ID_COLUMNS: tuple[str, ...] = ("image_index", "image_id")
GROUP_COLUMNS: tuple[str, ...] = ("patient_id", "lesion_id")
#: label bytes :func:`inspect_medmnist` decompresses per split at most (MedMNIST+'s largest,
#: ChestMNIST's 78k × 14 uint8, is about 1 MB)
MAX_LABEL_BYTES = 64 * 2**20


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


@dataclass(frozen=True)
class MedMNISTSummary:
    """What :func:`inspect_medmnist` found: the classes and the images per split."""

    class_names: tuple[str, ...]
    sizes: dict[str, int]
    image_shape: tuple[int, ...]


def medmnist_layout(npz_path: Path) -> dict[str, ArrayHeader]:
    """The archive's headers, checked against the MedMNIST layout without loading any array.

    Every split needs images (uint8, one shape for all) and labels: ``(N,)`` or ``(N, K)``
    integers (or booleans), N matching the images, K alike across splits.
    """
    if not npz_path.is_file():
        raise DatasetError(f"{npz_path}: npz file not found")
    headers = npz_headers(npz_path)
    missing = [
        f"{split}_{what}"
        for split in SPLIT_NAMES
        for what in ("images", "labels")
        if f"{split}_{what}" not in headers
    ]
    if missing:
        raise DatasetError(f"{npz_path}: missing key(s) {missing}; has {sorted(headers)}")
    first = headers["train_images"].shape
    widths = set()
    for split in SPLIT_NAMES:
        x, y = headers[f"{split}_images"], headers[f"{split}_labels"]
        if x.dtype != np.uint8 or len(x.shape) not in (3, 4) or x.shape[1:] != first[1:]:
            raise DatasetError(
                f"{npz_path}: {split}_images is {x.describe()}; expected uint8 (N, H, W) or "
                f"(N, H, W, C) with the shape of train_images {first}"
            )
        integers = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
        if len(y.shape) not in (1, 2) or y.shape[0] != x.shape[0] or not integers:
            raise DatasetError(
                f"{npz_path}: {split}_labels is {y.describe()}; expected integers "
                f"({x.shape[0]},) or ({x.shape[0]}, K)"
            )
        widths.add(1 if len(y.shape) == 1 else y.shape[1])
    if len(widths) != 1 or 0 in widths:
        raise DatasetError(
            f"{npz_path}: the splits' labels have {sorted(widths)} columns; expected one "
            "(class indices) or the same K (multi-label) in every split"
        )
    return headers


def inspect_medmnist(
    npz_path: str | Path,
    task: MedMNISTTask | None = None,
    label_column: int | None = None,
    class_names: Sequence[str] | None = None,
    max_label_bytes: int = MAX_LABEL_BYTES,
    max_array_bytes: int | None = None,
) -> MedMNISTSummary:
    """Check a file as :func:`load_medmnist` would, reading headers and labels but no image.

    Bounded whatever the file declares: headers are a few hundred bytes each and a labels
    array is decompressed only when it declares at most ``max_label_bytes``. With
    ``max_array_bytes``, a file whose arrays declare more in all is refused (what loading it
    would take).
    """
    npz_path = Path(npz_path)
    _check_options(npz_path, task, label_column)
    headers = medmnist_layout(npz_path)
    declared = sum(header.nbytes for header in headers.values())
    if max_array_bytes is not None and declared > max_array_bytes:
        raise DatasetError(
            f"{npz_path}: its arrays declare {declared / 2**30:.1f} GiB, over the "
            f"{max_array_bytes / 2**30:.1f} GiB a load may take"
        )
    raw = [
        read_member(npz_path, f"{split}_labels", headers[f"{split}_labels"], max_label_bytes)
        for split in SPLIT_NAMES
    ]
    names, _ = _labels(npz_path, raw, task, label_column, class_names)
    return MedMNISTSummary(
        class_names=names,
        sizes={split: headers[f"{split}_images"].shape[0] for split in SPLIT_NAMES},
        image_shape=headers["train_images"].shape[1:],
    )


def load_medmnist(
    npz_path: str | Path,
    task: MedMNISTTask | None = None,
    label_column: int | None = None,
    groups_csv: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> LabeledImages:
    """All three splits of a MedMNIST-format file, labelled for ``task``.

    Without a task the labels are taken as they are, ``(N,)`` or ``(N, 1)``, named by
    ``class_names`` (whose length then sets the class count, so a class absent from the file
    still gets its output) or ``"0"..."K-1"``; a multi-label file needs ``label_column`` to
    pick one binary column. With a task or ``label_column``, ``class_names`` renames the
    classes and must count as many. Groups default to one per image (MedMNIST ships no patient
    ids); ``groups_csv`` maps the ``{split}_ids`` to patient or lesion ids so that a re-split
    can keep each patient in one split.
    """
    npz_path = Path(npz_path)
    _check_options(npz_path, task, label_column)
    headers = medmnist_layout(npz_path)
    has_ids = all(f"{split}_ids" in headers for split in SPLIT_NAMES)
    with np.load(npz_path) as npz:
        images = [npz[f"{split}_images"] for split in SPLIT_NAMES]
        raw_labels = [npz[f"{split}_labels"] for split in SPLIT_NAMES]
        ids = [npz[f"{split}_ids"].astype(str) for split in SPLIT_NAMES] if has_ids else None

    names, labels = _labels(npz_path, raw_labels, task, label_column, class_names)
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
        class_names=names,
        labels=labels,
        groups=groups,
        arrays=np.concatenate(images),
        source_split=source_split,
    )


def _check_options(npz_path: Path, task: str | None, label_column: int | None) -> None:
    if task is not None and label_column is not None:
        raise DatasetError(f"{npz_path}: give task {task!r} or label_column, not both")
    if task is not None and task not in TASKS:
        raise DatasetError(f"{npz_path}: unknown task {task!r}; expected one of {list(TASKS)}")


def _labels(
    npz_path: Path,
    raw_labels: list[np.ndarray],
    task: str | None,
    label_column: int | None,
    class_names: Sequence[str] | None,
) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and the concatenated int64 labels of all splits."""
    columns = [y.reshape(len(y), -1) for y in raw_labels]  # (N,) as MedMNIST+ ships -> (N, 1)
    hint = ""
    if task is not None:
        found, convert = TASKS[task]
        names = named_classes(f"{npz_path} (task {task})", found, class_names)
    elif label_column is not None:
        names = named_classes(f"{npz_path} (label_column)", ("0", "1"), class_names)
        convert = partial(_binary_column, column=label_column)
    else:
        width = columns[0].shape[1]
        if width != 1:
            raise DatasetError(
                f"{npz_path}: train_labels has {width} columns: a multi-label file (as "
                "ChestMNIST). Training here is single-label (one softmax over exclusive "
                f"classes), so pick one finding as a binary task with label_column (0..{width - 1})"
            )
        if class_names is not None:
            names = tuple(class_names)
            hint = f" (class_names names {len(names)} classes)"
        else:
            count = max(int(y.max(initial=0)) for y in columns) + 1
            names = tuple(str(k) for k in range(count))
        convert = partial(_single, allowed=len(names))
    parts = []
    for split, y in zip(SPLIT_NAMES, columns, strict=True):
        try:
            parts.append(convert(y))
        except ValueError as error:
            raise DatasetError(f"{npz_path}: {split}_labels: {error}{hint}") from error
    return names, np.concatenate(parts)


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
