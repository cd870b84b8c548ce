"""check_dataset: the submission-time check agrees with the full load, and stays bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import DatasetError, DatasetSpec, load_dataset
from training.data.check import check_dataset


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(tmp_path))
    return tmp_path


def _npz(path: Path, labels: np.ndarray) -> Path:
    """Nine 4×4 images over the splits (4/2/3) with ``labels`` rows spread the same way."""
    arrays = {}
    for split, rows in (("train", slice(0, 4)), ("val", slice(4, 6)), ("test", slice(6, 9))):
        arrays[f"{split}_labels"] = labels[rows]
        arrays[f"{split}_images"] = np.zeros((len(labels[rows]), 4, 4), np.uint8)
    np.savez_compressed(path, **arrays)
    return path


ONE_D = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1], np.uint8)


@pytest.mark.parametrize(
    ("labels", "options", "names"),
    [
        (ONE_D, {}, ("0", "1")),
        (ONE_D[:, None], {"class_names": ("benign", "malignant")}, ("benign", "malignant")),
        (np.eye(9, 3, dtype=np.uint8), {"label_column": 1}, ("0", "1")),
        (ONE_D[:, None], {"task": "pneumonia"}, ("normal", "pneumonia")),
    ],
)
def test_a_good_file_gives_the_classes_the_load_gives(
    data_root: Path, labels: np.ndarray, options: dict, names: tuple[str, ...]
) -> None:
    _npz(data_root / "x.npz", labels)
    spec = DatasetSpec(kind="medmnist", path="x.npz", **options)
    summary = check_dataset(spec)
    assert summary.class_names == names == load_dataset(spec).class_names
    assert summary.sizes == {"train": 4, "val": 2, "test": 3}


@pytest.mark.parametrize(
    ("labels", "options", "message"),
    [
        (np.full(9, 3, np.uint8), {"class_names": ("a", "b")}, "label 3 at row 0 is not in 0..1"),
        (ONE_D, {"class_names": ("a", "b", "c"), "task": "pneumonia"}, "lists 3 names"),
        (np.zeros((9, 5), np.uint8), {}, "has 5 columns: a multi-label file"),
        (np.zeros((9, 5), np.uint8), {"label_column": 5}, "column 5 does not exist"),
        (ONE_D.astype(np.float64), {}, "train_labels is float64 \\(4,\\)"),
    ],
)
def test_a_bad_file_fails_the_check_as_the_load_fails(
    data_root: Path, labels: np.ndarray, options: dict, message: str
) -> None:
    _npz(data_root / "x.npz", labels)
    spec = DatasetSpec(kind="medmnist", path="x.npz", **options)
    for check in (check_dataset, load_dataset):
        with pytest.raises(DatasetError, match=message):
            check(spec)


def test_a_file_declaring_more_than_a_job_may_load_is_refused(data_root: Path) -> None:
    _npz(data_root / "x.npz", ONE_D)
    spec = DatasetSpec(kind="medmnist", path="x.npz")
    with pytest.raises(DatasetError, match=r"arrays declare .* GiB, over the"):
        check_dataset(spec, max_npz_bytes=64)


def test_path_kinds_count_classes_from_the_layout(data_root: Path, write_csv) -> None:
    for name in ("b_sick", "a_well", ".hidden"):
        (data_root / "tree" / name).mkdir(parents=True)
    (data_root / "tree" / "notes.txt").write_text("not a class")
    folders = DatasetSpec(kind="folders", path="tree")
    assert check_dataset(folders).class_names == ("a_well", "b_sick")
    named = DatasetSpec(kind="folders", path="tree", class_names=("x", "y", "z"))
    with pytest.raises(DatasetError, match=r"lists 3 names but the data has 2 classes"):
        check_dataset(named)
    write_csv(data_root / "cxr/Data_Entry_2017.csv", "Image Index,Finding Labels,Patient ID")
    cxr = DatasetSpec(kind="chestxray14", path="cxr", finding="Edema")
    assert check_dataset(cxr).class_names == ("no_edema", "edema")
    dr = DatasetSpec(kind="kaggle_dr", path="dr", binary=False)
    with pytest.raises(DatasetError, match=r"dr/trainLabels.csv: CSV file not found"):
        check_dataset(dr)
    ham = DatasetSpec(kind="ham10000", path="tree", class_names=("a", "b"))
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv: CSV file not found"):
        check_dataset(ham)


def test_real_staged_files_pass(real_data: Path) -> None:
    retina = DatasetSpec(kind="medmnist", path="retinamnist/retinamnist.npz", task="retina-binary")
    assert check_dataset(retina).class_names == ("no_referable_dr", "referable_dr")
    ham = DatasetSpec(kind="ham10000", path="ham10000_200x150")
    assert check_dataset(ham).num_classes == 7
