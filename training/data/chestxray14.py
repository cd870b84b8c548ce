"""NIH ChestX-ray14 (paper task: pneumothorax, binary).

``Data_Entry_2017.csv`` lists every PNG with its ``|``-separated findings and its patient. PNGs are
searched in the root, ``images/`` and ``images_*/images/`` (the layout of the official download,
which ships twelve ``images_NNN`` archives). Groups are patients: ChestX-ray14 has many follow-up
films per patient, and a patient in both train and test inflates every score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.base import DatasetError, LabeledImages, locate_files, read_csv_rows

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
# The 2017 release's name, then the name of NIH's 2020 re-release of the same table.
ENTRY_CSV_NAMES: tuple[str, ...] = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")


def load_chestxray14(
    root: str | Path, finding: str = "Pneumothorax", allow_missing: bool = False
) -> LabeledImages:
    """ChestX-ray14 as ``finding`` present (1) or absent (0), grouped by patient.

    Every token in "Finding Labels" must be a known finding or "No Finding": an unknown token
    would most likely be a misspelling of the finding asked for, and would silently become 0.
    """
    if finding not in FINDINGS:
        raise DatasetError(f"unknown ChestX-ray14 finding {finding!r}; expected one of {FINDINGS}")
    root = Path(root)
    entry_csv = next((root / n for n in ENTRY_CSV_NAMES if (root / n).is_file()), None)
    if entry_csv is None:
        raise DatasetError(f"{root / ENTRY_CSV_NAMES[0]}: CSV file not found")
    rows = read_csv_rows(entry_csv, ("Image Index", "Finding Labels", "Patient ID"))
    known = {*FINDINGS, NO_FINDING}
    labels = []
    seen: set[str] = set()
    for line, row in rows:
        if row["Image Index"] in seen:
            raise DatasetError(f"{entry_csv}: line {line}: duplicate image {row['Image Index']!r}")
        seen.add(row["Image Index"])
        tokens = row["Finding Labels"].split("|")
        unknown = [t for t in tokens if t not in known]
        if unknown:
            raise DatasetError(f"{entry_csv}: line {line}: unknown finding(s) {unknown}")
        labels.append(int(finding in tokens))

    directories = [root, root / "images", *(d / "images" for d in sorted(root.glob("images_*")))]
    wanted = [(line, row["Image Index"]) for line, row in rows]
    paths, skipped = locate_files(wanted, directories, entry_csv, allow_missing)
    keep = [i for i, path in enumerate(paths) if path is not None]
    if not keep:
        raise DatasetError(f"{entry_csv}: none of the {len(rows)} listed images was found")
    name = finding.lower()
    return LabeledImages(
        name=f"chestxray14_{name}",
        class_names=(f"no_{name}", name),
        labels=np.array(labels, dtype=np.int64)[keep],
        groups=np.array([rows[i][1]["Patient ID"] for i in keep]),
        paths=tuple(str(paths[i]) for i in keep),
        skipped=skipped,
    )
