"""Check a :class:`DatasetSpec` before work is queued on it, cheaply and within fixed bounds.

The job service calls :func:`check_dataset` on submission, so a file that the worker would
reject (a MedMNIST label shape it cannot read, label values out of range, ``class_names`` that
do not count the classes, a missing array) is refused at once with the reason, instead of
being accepted and failing minutes later. The check reads what is cheap and bounded: an
``.npz``'s headers and labels (never its images), or a file listing for the path kinds. Their
CSV rows and image files are still checked only by the worker's full load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from training.data.base import DatasetError, named_classes
from training.data.chestxray14 import ENTRY_CSV_NAMES, FINDINGS
from training.data.ham10000 import HAM10000_CLASSES
from training.data.kaggle_dr import DR_GRADES, REFERABLE_CLASSES
from training.data.medmnist import inspect_medmnist
from training.data.registry import DatasetSpec, resolve_path

#: arrays an ``.npz`` may declare in all: the worker holds every image in memory, as uint8 and
#: again as prepared float32, so a file declaring more would exhaust it rather than train
MAX_NPZ_BYTES = 8 * 2**30
#: entries listed in a ``folders`` root at most (its class sub-folders)
MAX_FOLDER_ENTRIES = 10_000


@dataclass(frozen=True)
class DatasetSummary:
    """What the check established: the class names a model trained on the data would get,
    and, where the source declares them cheaply (MedMNIST files), the images per split."""

    class_names: tuple[str, ...]
    sizes: dict[str, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_dataset(spec: DatasetSpec, max_npz_bytes: int = MAX_NPZ_BYTES) -> DatasetSummary:
    """The classes ``spec`` would load, or :class:`DatasetError` with what is wrong."""
    path = resolve_path(spec.path)
    if spec.kind == "medmnist":
        found = inspect_medmnist(
            path, spec.task, spec.label_column, spec.class_names, max_array_bytes=max_npz_bytes
        )
        return DatasetSummary(found.class_names, found.sizes)
    if spec.kind == "ham10000":
        _need_file(path / "HAM10000_metadata.csv")
        classes: tuple[str, ...] = HAM10000_CLASSES
    elif spec.kind == "kaggle_dr":
        _need_file(path / "trainLabels.csv")
        classes = REFERABLE_CLASSES if spec.binary in (None, True) else DR_GRADES
    elif spec.kind == "chestxray14":
        finding = spec.finding or "Pneumothorax"
        if finding not in FINDINGS:
            raise DatasetError(
                f"unknown ChestX-ray14 finding {finding!r}; expected one of {FINDINGS}"
            )
        if not any((path / name).is_file() for name in ENTRY_CSV_NAMES):
            raise DatasetError(f"{path / ENTRY_CSV_NAMES[0]}: CSV file not found")
        classes = (f"no_{finding.lower()}", finding.lower())
    else:
        classes = _class_folders(path)
    return DatasetSummary(named_classes(f"{path} ({spec.kind})", classes, spec.class_names))


def _need_file(path: Path) -> None:
    if not path.is_file():
        raise DatasetError(f"{path}: CSV file not found")


def _class_folders(root: Path) -> tuple[str, ...]:
    """The class sub-folder names of a ``folders`` root, as :func:`load_image_folders` sorts
    them, listing at most :data:`MAX_FOLDER_ENTRIES` entries."""
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder not found")
    names = []
    with os.scandir(root) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_FOLDER_ENTRIES:
                raise DatasetError(
                    f"{root}: more than {MAX_FOLDER_ENTRIES} entries; a folders dataset holds "
                    "one sub-folder per class"
                )
            if entry.is_dir() and not entry.name.startswith("."):
                names.append(entry.name)
    if not names:
        raise DatasetError(f"{root}: no class sub-folders")
    return tuple(sorted(names))
