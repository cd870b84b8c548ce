"""load_medmnist and inspect_medmnist on small generated npz files: tasks, label shapes as
MedMNIST publishes them, class names, groups, and malformed or forged files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from training.data import DatasetError, load_medmnist
from training.data.medmnist import TASKS, MedMNISTTask, inspect_medmnist

SIZES = {"train": 4, "val": 2, "test": 3}


def _write_npz(path: Path, labels: dict[str, np.ndarray], shape=(5, 5), ids=True) -> Path:
    arrays = {}
    offset = 0
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = np.full((n, *shape), 7, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels[split]
        if ids:
            arrays[f"{split}_ids"] = np.array([f"img{offset + i}.png" for i in range(n)])
        offset += n
    np.savez(path, **arrays)
    return path


def _by_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Nine rows of labels spread over the splits in order: 4 train, 2 val, 3 test."""
    return {"train": labels[:4], "val": labels[4:6], "test": labels[6:]}


def _column(values: list[int]) -> dict[str, np.ndarray]:
    """One label per image (an (N, 1) array, as MedMNIST stores it), spread over the splits."""
    return _by_split(np.array(values, dtype=np.uint8)[:, None])


def test_every_literal_task_has_a_mapping() -> None:
    assert set(TASKS) == set(get_args(MedMNISTTask))


def test_retina_binary_maps_grades_and_concatenates_splits(tmp_path: Path) -> None:
    path = _write_npz(
        tmp_path / "retina.npz", _column([0, 1, 2, 3, 4, 0, 1, 2, 4]), (5, 5, 3), False
    )
    data = load_medmnist(path, task="retina-binary")
    assert data.class_names == ("no_referable_dr", "referable_dr")
    assert data.labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 1, 1]
    assert data.source_split.tolist() == ["train"] * 4 + ["val"] * 2 + ["test"] * 3
    assert data.groups.tolist() == [str(i) for i in range(9)]
    assert data.arrays.shape == (9, 5, 5, 3) and data.paths is None
    assert data.name == "retina_retina-binary"


def test_without_task_labels_are_taken_as_is_and_ids_are_groups(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "x.npz", _column([0, 2, 1, 0, 2, 2, 1, 0, 0]))
    data = load_medmnist(path)
    assert data.class_names == ("0", "1", "2")
    assert data.labels.tolist() == [0, 2, 1, 0, 2, 2, 1, 0, 0]
    assert data.groups.tolist() == [f"img{i}.png" for i in range(9)]
    assert data.arrays.shape == (9, 5, 5)


def test_pneumothorax_takes_column_7_of_the_chestmnist_order(tmp_path: Path) -> None:
    multi = np.zeros((9, 14), dtype=np.uint8)
    multi[[1, 5, 8], 7] = 1
    multi[:, 2] = 1  # effusion everywhere: must not leak into the label
    labels = _by_split(multi)
    data = load_medmnist(_write_npz(tmp_path / "chest.npz", labels), task="pneumothorax")
    assert data.class_names == ("no_pneumothorax", "pneumothorax")
    assert data.labels.tolist() == [0, 1, 0, 0, 0, 1, 0, 0, 1]
    by_column = load_medmnist(tmp_path / "chest.npz", label_column=7)
    assert by_column.labels.tolist() == data.labels.tolist()


def test_multi_label_without_task_or_column_is_an_error(tmp_path: Path) -> None:
    multi = np.zeros((9, 14), dtype=np.uint8)
    path = _write_npz(tmp_path / "chest.npz", _by_split(multi))
    with pytest.raises(
        DatasetError,
        match=r"chest.npz: train_labels has 14 columns: a multi-label file.*label_column",
    ):
        load_medmnist(path)


def test_pneumonia_and_derma_names(tmp_path: Path) -> None:
    pneumonia = load_medmnist(
        _write_npz(tmp_path / "p.npz", _column([0, 1] * 4 + [1])), "pneumonia"
    )
    assert pneumonia.class_names == ("normal", "pneumonia")
    derma = load_medmnist(
        _write_npz(tmp_path / "d.npz", _column([0, 1, 2, 3, 4, 5, 6, 5, 5])), "derma"
    )
    assert derma.class_names == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert derma.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 5, 5]


@pytest.mark.parametrize(
    ("task", "values", "message"),
    [
        (
            "retina-binary",
            [0, 1, 2, 3, 4, 5, 0, 0, 0],
            r"val_labels: label 5 at row 1 is not in 0..4",
        ),
        ("pneumonia", [0, 1, 0, 1, 0, 1, 2, 0, 0], r"test_labels: label 2 at row 0 is not in 0..1"),
        ("derma", [7, 0, 0, 0, 0, 0, 0, 0, 0], r"train_labels: label 7 at row 0 is not in 0..6"),
    ],
)
def test_bad_label_value_names_file_split_row_and_value(
    tmp_path: Path, task: str, values: list[int], message: str
) -> None:
    path = _write_npz(tmp_path / "bad.npz", _column(values))
    with pytest.raises(DatasetError, match=rf"bad.npz: {message}"):
        load_medmnist(path, task=task)


def test_non_binary_multi_label_value_is_an_error(tmp_path: Path) -> None:
    multi = np.zeros((9, 14), dtype=np.uint8)
    multi[6, 7] = 3
    path = _write_npz(tmp_path / "c.npz", _by_split(multi))
    with pytest.raises(DatasetError, match=r"c.npz: test_labels: label 3 at row 0 is not 0 or 1"):
        load_medmnist(path, task="pneumothorax")


def test_missing_key_and_missing_file(tmp_path: Path) -> None:
    arrays = {f"{s}_images": np.zeros((2, 4, 4), np.uint8) for s in SIZES}
    arrays |= {f"{s}_labels": np.zeros((2, 1), np.uint8) for s in ("train", "test")}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(DatasetError, match=r"partial.npz: missing key\(s\) \['val_labels'\]"):
        load_medmnist(tmp_path / "partial.npz")
    with pytest.raises(DatasetError, match=r"absent.npz: npz file not found"):
        load_medmnist(tmp_path / "absent.npz")


def test_mismatched_shapes_and_dtypes_are_errors(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "x.npz", _column([0] * 9))
    arrays = dict(np.load(path))
    np.savez(tmp_path / "float.npz", **(arrays | {"val_images": arrays["val_images"] / 255}))
    with pytest.raises(DatasetError, match=r"float.npz: val_images is float64"):
        load_medmnist(tmp_path / "float.npz")
    np.savez(tmp_path / "short.npz", **(arrays | {"test_labels": arrays["test_labels"][:2]}))
    with pytest.raises(DatasetError, match=r"short.npz: test_labels is uint8 \(2, 1\)"):
        load_medmnist(tmp_path / "short.npz")
    floats = arrays | {"val_labels": arrays["val_labels"].astype(np.float32)}
    np.savez(tmp_path / "floats.npz", **floats)
    with pytest.raises(DatasetError, match=r"val_labels is float32 \(2, 1\); expected integers"):
        load_medmnist(tmp_path / "floats.npz")
    mixed = arrays | {"test_labels": np.zeros((3, 2), np.uint8)}
    np.savez(tmp_path / "mixed.npz", **mixed)
    with pytest.raises(DatasetError, match=r"mixed.npz: the splits' labels have \[1, 2\] columns"):
        load_medmnist(tmp_path / "mixed.npz")


def test_groups_csv_maps_ids_to_patients(tmp_path: Path, write_csv) -> None:
    path = _write_npz(tmp_path / "x.npz", _column([0, 1, 0, 1, 0, 1, 0, 1, 0]))
    patients = [1, 1, 2, 3, 3, 4, 5, 5, 5]
    write_csv(
        tmp_path / "labels.csv",
        "image_index,split,patient_id",
        *(f"img{i}.png,train,{p}" for i, p in enumerate(patients)),
    )
    data = load_medmnist(path, groups_csv=tmp_path / "labels.csv")
    assert data.groups.tolist() == [str(p) for p in patients]


def test_groups_csv_errors(tmp_path: Path, write_csv) -> None:
    path = _write_npz(tmp_path / "x.npz", _column([0] * 9))
    write_csv(tmp_path / "short.csv", "image_index,patient_id", "img0.png,1")
    with pytest.raises(DatasetError, match=r"short.csv: no patient_id for id 'img1.png' \(8 of 9"):
        load_medmnist(path, groups_csv=tmp_path / "short.csv")
    write_csv(tmp_path / "cols.csv", "name,patient", "img0.png,1")
    with pytest.raises(DatasetError, match=r"cols.csv: needs an id column"):
        load_medmnist(path, groups_csv=tmp_path / "cols.csv")
    write_csv(tmp_path / "twice.csv", "image_id,lesion_id", "img0.png,L1", "img0.png,L2")
    with pytest.raises(DatasetError, match=r"twice.csv: line 3: 'img0.png' listed again"):
        load_medmnist(path, groups_csv=tmp_path / "twice.csv")
    no_ids = _write_npz(tmp_path / "no_ids.npz", _column([0] * 9), ids=False)
    with pytest.raises(DatasetError, match=r"no_ids.npz: groups_csv needs"):
        load_medmnist(no_ids, groups_csv=tmp_path / "short.csv")


# ---- label shapes and class names as published files have them ---------------------------


@pytest.mark.parametrize("shape", ["(N,)", "(N, 1)"])
def test_one_dimensional_and_column_labels_load_alike(tmp_path: Path, shape: str) -> None:
    """BreastMNIST-style ``(N,)`` labels and the usual ``(N, 1)`` give the same dataset."""
    values = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1], dtype=np.uint8)
    labels = _by_split(values if shape == "(N,)" else values[:, None])
    path = _write_npz(tmp_path / "breast.npz", labels)
    data = load_medmnist(path, class_names=("malignant", "benign"))
    assert data.class_names == ("malignant", "benign")
    assert data.labels.tolist() == values.tolist()
    assert inspect_medmnist(path).class_names == ("0", "1")
    assert inspect_medmnist(path).sizes == SIZES


def test_class_names_set_the_class_count_and_bound_the_labels(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "x.npz", _by_split(np.array([0, 1, 0, 1, 0, 1, 0, 1, 0])))
    # a class absent from the file still gets its name (and its output)
    three = load_medmnist(path, class_names=("a", "b", "c"))
    assert three.num_classes == 3 and three.class_counts().tolist() == [5, 4, 0]
    out_of_range = _write_npz(tmp_path / "y.npz", _by_split(np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])))
    for check in (load_medmnist, inspect_medmnist):
        with pytest.raises(
            DatasetError,
            match=r"y.npz: train_labels: label 2 at row 2 is not in 0..1 \(class_names names 2",
        ):
            check(out_of_range, class_names=("a", "b"))


def test_class_names_rename_a_task_or_column_and_must_count_alike(tmp_path: Path) -> None:
    multi = np.zeros((9, 14), dtype=np.uint8)
    multi[[0, 4], 2] = 1
    path = _write_npz(tmp_path / "chest.npz", _by_split(multi))
    effusion = load_medmnist(path, label_column=2, class_names=("no_effusion", "effusion"))
    assert effusion.class_names == ("no_effusion", "effusion")
    assert effusion.labels.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0]
    with pytest.raises(DatasetError, match=r"class_names lists 3 names but the data has 2 classes"):
        inspect_medmnist(path, label_column=2, class_names=("a", "b", "c"))
    column = _write_npz(tmp_path / "p.npz", _column([0, 1] * 4 + [1]))
    with pytest.raises(DatasetError, match=r"\(task pneumonia\): class_names lists 3 names"):
        load_medmnist(column, "pneumonia", class_names=("a", "b", "c"))


def test_inspect_reads_no_image_and_refuses_forged_or_oversized_files(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "x.npz", _column([0, 1, 0, 1, 0, 1, 0, 1, 0]), (5, 5, 3))
    summary = inspect_medmnist(path)
    assert summary.image_shape == (5, 5, 3) and summary.sizes == SIZES
    with pytest.raises(DatasetError, match=r"x.npz: its arrays declare 0.0 GiB, over the"):
        inspect_medmnist(path, max_array_bytes=100)
    with pytest.raises(DatasetError, match=r"train_labels declares 4 bytes, over the 3"):
        inspect_medmnist(path, max_label_bytes=3)


def _forge_train_images_shape(source: Path, target: Path, shape: tuple[int, ...]) -> None:
    """``source`` copied with the train_images header claiming ``shape`` (data unchanged)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "train_images.npy":
                header = np.lib.format.header_data_from_array_1_0(np.zeros((4, 5, 5), np.uint8))
                forged = io.BytesIO()
                np.lib.format.write_array_header_1_0(forged, {**header, "shape": shape})
                data = forged.getvalue() + data[len(forged.getvalue()) :]
            out.writestr(info.filename, data)


def test_a_header_that_promises_more_data_than_the_archive_holds_is_refused(
    tmp_path: Path,
) -> None:
    """A zip bomb's promise without the bomb: a terabyte-sized shape over 100 bytes of data."""
    path = _write_npz(tmp_path / "x.npz", _column([0] * 9))
    _forge_train_images_shape(path, tmp_path / "forged.npz", (4, 500_000, 500_000))
    for check in (inspect_medmnist, load_medmnist):
        with pytest.raises(DatasetError, match=r"forged.npz: train_images declares uint8 \(4, "):
            check(tmp_path / "forged.npz")


def test_not_an_archive_and_object_arrays_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DatasetError, match=r"text.npz: not an .npz archive"):
        inspect_medmnist(tmp_path / "text.npz")
    arrays = {f"{s}_images": np.zeros((1, 4, 4), np.uint8) for s in SIZES}
    arrays |= {f"{s}_labels": np.array([[0]], dtype=object) for s in SIZES}
    np.savez(tmp_path / "objects.npz", **arrays)
    with pytest.raises(DatasetError, match=r"objects.npz: train_labels holds Python objects"):
        inspect_medmnist(tmp_path / "objects.npz")


def test_real_medmnist_files_any_task_without_a_named_recipe(real_data: Path) -> None:
    """RetinaMNIST as five graded classes and ChestMNIST-order multi-labels one finding at a
    time, named by the caller: no task in TASKS is involved."""
    grades = ("no_dr", "mild", "moderate", "severe", "proliferative")
    retina = real_data / "retinamnist" / "retinamnist.npz"
    data = load_medmnist(retina, class_names=grades)
    assert data.class_names == grades and len(data) == 1600
    assert data.class_counts().tolist() == [714, 186, 326, 282, 92]  # README: train+val+test
    assert inspect_medmnist(retina, class_names=grades).sizes == {
        "train": 1080,
        "val": 120,
        "test": 400,
    }
    chest = real_data / "nih_chestxray14_1000_64" / "nih_chestxray14_1000_64.npz"
    with pytest.raises(DatasetError, match=r"has 14 columns: a multi-label file"):
        inspect_medmnist(chest)
    effusion = inspect_medmnist(chest, label_column=2, class_names=("no_effusion", "effusion"))
    assert effusion.class_names == ("no_effusion", "effusion")
    assert load_medmnist(chest, label_column=2).class_counts()[1] == 102 + 39 + 29  # README


def test_a_corrupt_compressed_member_is_a_dataset_error(tmp_path: Path) -> None:
    """Deflate data that does not inflate (a damaged download) is reported, not raised raw."""
    arrays = {f"{s}_images": np.zeros((n, 4, 4), np.uint8) for s, n in SIZES.items()}
    arrays |= {f"{s}_labels": np.arange(n, dtype=np.int64) % 2 for s, n in SIZES.items()}
    np.savez_compressed(tmp_path / "x.npz", **arrays)
    data = bytearray((tmp_path / "x.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "x.npz") as archive:
        info = archive.getinfo("val_labels.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + info.compress_size] = b"\xff" * info.compress_size
    (tmp_path / "broken.npz").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"broken.npz: val_labels.npy cannot be read"):
        inspect_medmnist(tmp_path / "broken.npz")
