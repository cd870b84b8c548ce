"""The one shape every dataset adapter returns.

Adapters differ in how a source lays out its files; everything downstream (splitting, the tf.data
pipeline, fingerprints for provenance) only ever sees a :class:`LabeledImages`.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset cannot be read as asked; the message names the file or value at fault."""


@dataclass(frozen=True)
class LabeledImages:
    """Images with integer labels, class names and a group id per image.

    Exactly one of ``paths`` (image files decoded lazily by the pipeline) or ``arrays``
    (uint8 images already in memory, ``(N, H, W)`` or ``(N, H, W, C)``) is set.

    ``groups`` holds the unit that must never straddle splits (a lesion, a patient).
    ``source_split`` holds the split a source ships with ("train"/"val"/"test"), if any.
    """

    name: str
    class_names: tuple[str, ...]
    labels: np.ndarray
    groups: np.ndarray
    paths: tuple[str, ...] | None = None
    arrays: np.ndarray | None = None
    source_split: np.ndarray | None = None
    skipped: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.paths is not None and self.arrays is None:
            images = len(self.paths)
        elif self.arrays is not None and self.paths is None:
            images = len(self.arrays)
        else:
            raise DatasetError(f"{self.name}: exactly one of paths or arrays must be given")
        n = len(self.labels)
        sizes = {"groups": len(self.groups), "images": images}
        if self.source_split is not None:
            sizes["source_split"] = len(self.source_split)
        for what, size in sizes.items():
            if size != n:
                raise DatasetError(f"{self.name}: {n} labels but {size} {what}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DatasetError(
                f"{self.name}: labels must lie in [0, {len(self.class_names) - 1}], "
                f"got [{self.labels.min()}, {self.labels.max()}]"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def file_paths(self) -> tuple[str, ...]:
        """``paths``, for what needs the files themselves (lazy decoding, lookups by file name)."""
        if self.paths is None:
            raise DatasetError(f"{self.name}: the images are arrays in memory, not files")
        return self.paths

    def subset(self, indices: np.ndarray) -> LabeledImages:
        """The images at ``indices``, in that order, with the same class names."""
        indices = np.asarray(indices, dtype=np.int64)
        return LabeledImages(
            name=self.name,
            class_names=self.class_names,
            labels=self.labels[indices],
            groups=self.groups[indices],
            paths=tuple(self.paths[i] for i in indices) if self.paths is not None else None,
            arrays=self.arrays[indices] if self.arrays is not None else None,
            source_split=self.source_split[indices] if self.source_split is not None else None,
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self) -> str:
        """sha256 over labels, groups, class names and image identity.

        Files are identified by name and size (hashing every byte of a large image folder on each
        run would cost more than the training step it documents); in-memory arrays by their bytes.
        """
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.class_names).encode())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        digest.update("\x1f".join(map(str, self.groups)).encode())
        if self.paths is not None:
            for path in self.paths:
                digest.update(f"{Path(path).name}:{Path(path).stat().st_size}\x1f".encode())
        else:
            digest.update(np.ascontiguousarray(self.arrays).tobytes())
        return digest.hexdigest()


def named_classes(
    source: str, found: Sequence[str], given: Sequence[str] | None
) -> tuple[str, ...]:
    """``given`` (a spec's ``class_names``) in place of the adapter's ``found`` names.

    The label indices stay as the adapter made them, so only the count must agree: a list one
    short or one long would shift every name onto the wrong output and mislabel every answer.
    """
    if given is None:
        return tuple(found)
    if len(given) != len(found):
        raise DatasetError(
            f"{source}: class_names lists {len(given)} names but the data has "
            f"{len(found)} classes ({', '.join(found)})"
        )
    return tuple(given)


def read_csv_rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV as ``(line number, row)``, values stripped.

    Checks up front that the file and the ``required`` columns exist and that no row leaves a
    required column empty, so adapters can report any later problem as "file, line, value".
    """
    if not path.is_file():
        raise DatasetError(f"{path}: CSV file not found")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or ()]
        missing = [name for name in required if name not in columns]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; found {columns}")
        rows = []
        for raw in reader:
            row = {
                key.strip(): (value or "").strip()
                for key, value in raw.items()
                if isinstance(key, str)
            }
            for name in required:
                if not row[name]:
                    raise DatasetError(f"{path}: line {reader.line_num}: empty {name!r}")
            rows.append((reader.line_num, row))
    return rows


def locate_files(
    wanted: Sequence[tuple[int, str]],
    directories: Sequence[Path],
    listed_in: Path,
    allow_missing: bool,
) -> tuple[list[str | None], tuple[str, ...]]:
    """Paths of the file names in ``wanted`` (``(line, name)`` pairs), searched in ``directories``.

    One listing per directory instead of one ``stat`` per image (HAM10000 has 10,015 files); the
    first directory holding a name wins. A name found nowhere is an error naming ``listed_in`` and
    its line, unless ``allow_missing``: then its path is ``None`` and it is reported in the
    returned skipped names, so a dropped image is always visible in ``LabeledImages.skipped``.
    """
    found: dict[str, str] = {}
    for directory in reversed(directories):
        if directory.is_dir():
            found.update(
                {entry.name: entry.path for entry in os.scandir(directory) if entry.is_file()}
            )
    paths = [found.get(name) for _, name in wanted]
    missing = [(line, name) for (line, name), path in zip(wanted, paths, strict=True) if not path]
    if missing and not allow_missing:
        line, name = missing[0]
        searched = ", ".join(str(d) for d in directories)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(
            f"{listed_in}: line {line}: image {name} not found in {searched}{more}; "
            "pass allow_missing=True to drop such rows"
        )
    return paths, tuple(name for _, name in missing)
