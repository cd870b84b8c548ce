"""The adapters and splits on the real staged data, checked against the counts in its README.

Kaggle DR and ChestX-ray14 are not staged in their original layout, so their adapters are run on
trees built in tmp_path from real pixels (RetinaMNIST fundus images, NIH chest films) and real
NIH labels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import (
    DatasetSpec,
    load_chestxray14,
    load_dataset,
    load_ham10000,
    load_kaggle_dr,
    load_medmnist,
    split_indices,
    splits_for,
)

pytestmark = pytest.mark.data

HAM_CLASS_COUNTS = [327, 514, 1099, 115, 1113, 6705, 142]
HAM_SOURCE_COUNTS = {
    "train": [229, 361, 771, 81, 780, 4694, 100],
    "val": [33, 51, 109, 12, 111, 670, 14],
    "test": [65, 102, 219, 22, 222, 1341, 28],
}
RETINA_GRADE_COUNTS = {
    "train": [486, 128, 206, 194, 66],
    "val": [54, 12, 28, 20, 6],
    "test": [174, 46, 92, 68, 20],
}
NIH = "nih_chestxray14_1000_64"


def _counts(data, split: str) -> list[int]:
    return np.bincount(data.labels[data.source_split == split], minlength=data.num_classes).tolist()


def _straddling(groups: np.ndarray, splits: dict[str, np.ndarray]) -> set[str]:
    where: dict[str, set[str]] = {}
    for name, indices in splits.items():
        for group in groups[indices].tolist():
            where.setdefault(group, set()).add(name)
    return {group for group, names in where.items() if len(names) > 1}


@pytest.fixture(scope="module")
def ham(real_data: Path):
    return load_ham10000(real_data / "ham10000_200x150")


def test_ham10000_counts_lesions_and_source_split(ham) -> None:
    assert len(ham) == 10015 and ham.skipped == ()
    assert ham.class_counts().tolist() == HAM_CLASS_COUNTS
    assert len(set(ham.groups.tolist())) == 7470
    for split, counts in HAM_SOURCE_COUNTS.items():
        assert _counts(ham, split) == counts
    source = split_indices(ham, use_source_split=True)
    assert [len(v) for v in source.values()] == [7016, 1000, 1999]
    assert _straddling(ham.groups, source) == set()


def test_ham10000_group_split_keeps_lesions_whole_and_classes_stratified(ham) -> None:
    splits = split_indices(ham, seed=0)
    assert np.array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(len(ham)))
    assert _straddling(ham.groups, splits) == set()
    overall = ham.class_counts() / len(ham)
    for name, fraction in zip(splits, (0.7, 0.1, 0.2), strict=True):
        assert len(splits[name]) / len(ham) == pytest.approx(fraction, abs=0.005)
        shares = np.bincount(ham.labels[splits[name]], minlength=7) / len(splits[name])
        assert np.abs(shares - overall).max() < 0.02, (name, shares, overall)
    again, other = split_indices(ham, seed=0), split_indices(ham, seed=1)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert not np.array_equal(splits["test"], other["test"])


def test_ham10000_28_npz_agrees_with_the_jpeg_adapter(real_data: Path, ham) -> None:
    root = real_data / "ham10000_200x150"
    derma = load_medmnist(root / "ham10000_28.npz", task="derma", groups_csv=root / "splits.csv")
    assert derma.class_names == ham.class_names and derma.arrays.shape == (10015, 28, 28, 3)
    by_id = {Path(p).stem: i for i, p in enumerate(ham.paths)}
    npz = np.load(root / "ham10000_28.npz")
    ids = np.concatenate([npz[f"{s}_ids"] for s in ("train", "val", "test")])
    order = np.array([by_id[i] for i in ids])
    assert np.array_equal(derma.labels, ham.labels[order])
    assert np.array_equal(derma.groups, ham.groups[order])
    assert np.array_equal(derma.source_split, ham.source_split[order])


def test_retinamnist_binary_and_grades_match_the_readme(real_data: Path) -> None:
    path = real_data / "retinamnist" / "retinamnist.npz"
    grades = load_medmnist(path)
    assert grades.class_names == ("0", "1", "2", "3", "4")
    binary = load_medmnist(path, task="retina-binary")
    assert binary.arrays.shape == (1600, 28, 28, 3)
    for split, counts in RETINA_GRADE_COUNTS.items():
        assert _counts(grades, split) == counts
        assert _counts(binary, split) == [sum(counts[:2]), sum(counts[2:])]


def test_pneumoniamnist_reduced_train_counts(real_data: Path) -> None:
    spec = DatasetSpec(
        kind="medmnist", path="pneumoniamnist/pneumoniamnist_reduced_train.npz", task="pneumonia"
    )
    data = load_dataset(spec)
    assert data.arrays.shape == (5030, 28, 28)
    expected = {"train": [388, 3494], "val": [135, 389], "test": [234, 390]}
    assert {split: _counts(data, split) for split in expected} == expected


def test_nih_pneumothorax_positives_and_patient_groups(real_data: Path) -> None:
    spec = DatasetSpec(
        kind="medmnist", path=f"{NIH}/{NIH}.npz", task="pneumothorax",
        groups_csv=f"{NIH}/labels.csv",
    )  # fmt: skip
    data = load_dataset(spec)
    assert [_counts(data, s)[1] for s in ("train", "val", "test")] == [32, 8, 0]
    assert len(set(data.groups.tolist())) == 264
    # The README's caveat: the shipped split is not patient-wise.
    assert len(_straddling(data.groups, split_indices(data, use_source_split=True))) == 30
    regrouped = splits_for(spec.model_copy(update={"split": "group"}), data)
    assert _straddling(data.groups, regrouped) == set()
    # All 40 positives come from 7 patients, 20 from patient 13 alone: any patient-wise split puts
    # half of them in one split, and some seeds leave a split without a positive.
    positives = data.groups[data.labels == 1]
    assert len(set(positives.tolist())) == 7 and np.sum(positives == "13") == 20


def test_nih_labels_csv_agrees_with_npz_column_7(real_data: Path) -> None:
    npz = np.load(real_data / NIH / f"{NIH}.npz")
    with (real_data / NIH / "labels.csv").open(newline="") as handle:
        rows = {row["image_index"]: row for row in csv.DictReader(handle)}
    for split in ("train", "val", "test"):
        for image_id, multi in zip(npz[f"{split}_ids"], npz[f"{split}_labels"], strict=True):
            row = rows[str(image_id)]
            assert row["split"] == split
            assert multi[7] == ("Pneumothorax" in row["finding_labels"].split("|"))


def test_kaggle_dr_adapter_on_real_fundus_pixels(real_data: Path, tmp_path: Path) -> None:
    npz = np.load(real_data / "retinamnist" / "retinamnist.npz")
    images, grades = npz["train_images"][:40], npz["train_labels"][:40, 0]
    names = [f"{10 + k // 2}_{'left' if k % 2 == 0 else 'right'}" for k in range(40)]
    (tmp_path / "train").mkdir()
    for name, image in zip(names, images, strict=True):
        cv2.imwrite(str(tmp_path / "train" / f"{name}.jpeg"), image[..., ::-1])
    lines = ["image,level", *(f"{n},{g}" for n, g in zip(names, grades, strict=True))]
    (tmp_path / "trainLabels.csv").write_text("\n".join(lines) + "\n")

    data = load_kaggle_dr(tmp_path)
    assert np.array_equal(data.labels, (grades >= 2).astype(np.int64))
    assert data.groups.tolist() == [n.split("_")[0] for n in names]
    assert np.array_equal(load_kaggle_dr(tmp_path, binary=False).labels, grades)
    decoded = cv2.imread(data.paths[3])[..., ::-1]
    assert decoded.shape == (28, 28, 3)
    assert np.abs(decoded.astype(int) - images[3]).mean() < 12  # JPEG is lossy, not different
    assert len(split_indices(data)["test"]) > 0


def test_chestxray14_adapter_on_real_nih_films(real_data: Path, tmp_path: Path) -> None:
    npz = np.load(real_data / NIH / f"{NIH}.npz")
    ids = np.concatenate([npz[f"{s}_ids"] for s in ("train", "val", "test")]).tolist()
    films = np.concatenate([npz[f"{s}_images"] for s in ("train", "val", "test")])
    pneumothorax = np.concatenate([npz[f"{s}_labels"][:, 7] for s in ("train", "val", "test")])
    for k, (image_id, film) in enumerate(zip(ids, films, strict=True)):
        folder = tmp_path / f"images_{k % 3 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / image_id), film)
    with (real_data / NIH / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (tmp_path / "Data_Entry_2017.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID"])
        writer.writerows([r["image_index"], r["finding_labels"], 0, r["patient_id"]] for r in rows)

    data = load_chestxray14(tmp_path)
    assert len(data) == 1000 and data.class_counts().tolist() == [960, 40]
    position = {Path(p).name: i for i, p in enumerate(data.paths)}
    order = np.array([position[i] for i in ids])
    assert np.array_equal(data.labels[order], pneumothorax)
    assert len(set(data.groups.tolist())) == 264
    assert np.array_equal(cv2.imread(data.paths[order[5]], cv2.IMREAD_GRAYSCALE), films[5])
    assert _straddling(data.groups, split_indices(data, seed=2)) == set()
