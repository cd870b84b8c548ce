"""Kaggle Diabetic Retinopathy Detection fundus photographs (paper task: referable DR, binary).

``trainLabels.csv`` (image, level 0-4) names ``<image>.jpeg`` files in the root or ``train/``.
Image names are ``<patient>_<left|right>``; both eyes of a patient share a group, because the two
eyes of one person look alike and usually share the grade, and splitting them would leak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.base import DatasetError, LabeledImages, locate_files, read_csv_rows

DR_GRADES: tuple[str, ...] = ("no_dr", "mild", "moderate", "severe", "proliferative_dr")
REFERABLE_CLASSES: tuple[str, ...] = ("no_referable_dr", "referable_dr")
# The paper's mapping: grades 0-1 are not referable, 2-4 (moderate and worse) are.
REFERABLE_FROM_GRADE = np.array([0, 0, 1, 1, 1], dtype=np.int64)


def load_kaggle_dr(
    root: str | Path, binary: bool = True, allow_missing: bool = False
) -> LabeledImages:
    """The Kaggle DR images, as referable/not referable (``binary``) or as the five grades."""
    root = Path(root)
    labels_csv = root / "trainLabels.csv"
    rows = read_csv_rows(labels_csv, ("image", "level"))
    grades, patients = [], []
    seen: set[str] = set()
    for line, row in rows:
        if row["image"] in seen:
            raise DatasetError(f"{labels_csv}: line {line}: duplicate image {row['image']!r}")
        seen.add(row["image"])
        level = row["level"]
        if level not in {"0", "1", "2", "3", "4"}:
            raise DatasetError(f"{labels_csv}: line {line}: level {level!r} is not a grade 0-4")
        patient, sep, _ = row["image"].partition("_")
        if not (sep and patient):
            raise DatasetError(
                f"{labels_csv}: line {line}: image {row['image']!r} is not <patient>_<eye>, "
                "so its patient (the split group) is unknown"
            )
        grades.append(int(level))
        patients.append(patient)

    wanted = [(line, f"{row['image']}.jpeg") for line, row in rows]
    paths, skipped = locate_files(wanted, [root, root / "train"], labels_csv, allow_missing)
    keep = [i for i, path in enumerate(paths) if path is not None]
    if not keep:
        raise DatasetError(f"{labels_csv}: none of the {len(rows)} listed images was found")
    grade = np.array(grades, dtype=np.int64)[keep]
    return LabeledImages(
        name="kaggle_dr" if binary else "kaggle_dr_grades",
        class_names=REFERABLE_CLASSES if binary else DR_GRADES,
        labels=REFERABLE_FROM_GRADE[grade] if binary else grade,
        groups=np.array(patients)[keep],
        paths=tuple(str(paths[i]) for i in keep),
        skipped=skipped,
    )
