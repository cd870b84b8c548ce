"""load_ham10000 on tiny generated trees in both the staged and the Kaggle layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import DatasetError, load_ham10000

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"
ROWS = (
    "HAM_1,ISIC_1,bkl,histo,80.0,male,scalp",
    "HAM_1,ISIC_2,bkl,histo,80.0,male,scalp",
    "HAM_2,ISIC_3,vasc,histo,40.0,female,back",
    "HAM_3,ISIC_4,akiec,histo,60.0,male,face",
)


@pytest.fixture
def ham_root(tmp_path: Path, write_image, write_csv) -> Path:
    write_csv(tmp_path / "HAM10000_metadata.csv", HEADER, *ROWS)
    for image_id in ("ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4"):
        write_image(tmp_path / "images" / f"{image_id}.jpg")
    return tmp_path


def test_labels_groups_and_paths_follow_the_metadata(ham_root: Path) -> None:
    data = load_ham10000(ham_root)
    assert data.class_names == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert data.labels.tolist() == [2, 2, 6, 0]
    assert data.groups.tolist() == ["HAM_1", "HAM_1", "HAM_2", "HAM_3"]
    assert [Path(p).name for p in data.paths] == [f"ISIC_{i}.jpg" for i in range(1, 5)]
    assert data.source_split is None and data.skipped == ()


def test_kaggle_layout_with_two_image_folders(tmp_path: Path, write_image, write_csv) -> None:
    write_csv(tmp_path / "HAM10000_metadata.csv", HEADER, *ROWS)
    write_image(tmp_path / "HAM10000_images_part_1" / "ISIC_1.jpg")
    write_image(tmp_path / "HAM10000_images_part_1" / "ISIC_2.jpg")
    write_image(tmp_path / "HAM10000_images_part_2" / "ISIC_3.jpg")
    write_image(tmp_path / "HAM10000_images_part_2" / "ISIC_4.jpg")
    data = load_ham10000(tmp_path)
    assert [Path(p).parent.name for p in data.paths] == ["HAM10000_images_part_1"] * 2 + [
        "HAM10000_images_part_2"
    ] * 2


def test_source_split_comes_from_splits_csv(ham_root: Path, write_csv) -> None:
    write_csv(
        ham_root / "splits.csv",
        "image_id,lesion_id,dx,label,split",
        "ISIC_4,HAM_3,akiec,0,test",
        "ISIC_1,HAM_1,bkl,2,train",
        "ISIC_2,HAM_1,bkl,2,train",
        "ISIC_3,HAM_2,vasc,6,val",
    )
    assert load_ham10000(ham_root).source_split.tolist() == ["train", "train", "val", "test"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("ISIC_4,HAM_3,akiec,0,holdout", "line 5: unknown split 'holdout'"),
        ("ISIC_4,HAM_3,akiec,1,test", "line 5: dx 'akiec' with label '1'"),
        ("ISIC_4,HAM_9,akiec,0,test", "lesion/dx HAM_9/akiec but the metadata says HAM_3/akiec"),
    ],
)
def test_splits_csv_must_agree_with_the_metadata(
    ham_root: Path, write_csv, row: str, message: str
) -> None:
    write_csv(
        ham_root / "splits.csv",
        "image_id,lesion_id,dx,label,split",
        "ISIC_1,HAM_1,bkl,2,train",
        "ISIC_2,HAM_1,bkl,2,train",
        "ISIC_3,HAM_2,vasc,6,val",
        row,
    )
    with pytest.raises(DatasetError, match="splits.csv") as error:
        load_ham10000(ham_root)
    assert message in str(error.value)


def test_splits_csv_missing_an_image_is_an_error(ham_root: Path, write_csv) -> None:
    write_csv(
        ham_root / "splits.csv", "image_id,lesion_id,dx,label,split", "ISIC_1,HAM_1,bkl,2,train"
    )
    with pytest.raises(DatasetError, match=r"splits.csv: no row for image 'ISIC_2'"):
        load_ham10000(ham_root)


def test_missing_csv_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv: CSV file not found"):
        load_ham10000(tmp_path)


def test_missing_column_names_the_file_and_column(tmp_path: Path, write_csv) -> None:
    write_csv(tmp_path / "HAM10000_metadata.csv", "lesion_id,image_id", "HAM_1,ISIC_1")
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv: missing column\(s\) \['dx'\]"):
        load_ham10000(tmp_path)


def test_unknown_dx_names_file_line_and_value(ham_root: Path, write_csv) -> None:
    write_csv(ham_root / "HAM10000_metadata.csv", HEADER, *ROWS, "HAM_4,ISIC_5,melanoma,x,1,m,y")
    with pytest.raises(DatasetError, match=r"metadata.csv: line 6: unknown dx 'melanoma'"):
        load_ham10000(ham_root)


def test_duplicate_image_id_is_an_error(ham_root: Path, write_csv) -> None:
    write_csv(ham_root / "HAM10000_metadata.csv", HEADER, *ROWS, ROWS[0])
    with pytest.raises(DatasetError, match=r"line 6: duplicate image_id 'ISIC_1'"):
        load_ham10000(ham_root)


def test_missing_image_is_an_error_naming_it(ham_root: Path) -> None:
    (ham_root / "images" / "ISIC_3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"metadata.csv: line 4: image ISIC_3.jpg not found"):
        load_ham10000(ham_root)


def test_allow_missing_drops_and_lists_the_rows(ham_root: Path) -> None:
    (ham_root / "images" / "ISIC_3.jpg").unlink()
    (ham_root / "images" / "ISIC_1.jpg").unlink()
    data = load_ham10000(ham_root, allow_missing=True)
    assert data.skipped == ("ISIC_1.jpg", "ISIC_3.jpg")
    assert data.labels.tolist() == [2, 0]
    assert data.groups.tolist() == ["HAM_1", "HAM_3"]
    assert np.all([Path(p).exists() for p in data.paths])


def test_no_image_folder_is_an_error(tmp_path: Path, write_csv) -> None:
    write_csv(tmp_path / "HAM10000_metadata.csv", HEADER, *ROWS)
    with pytest.raises(DatasetError, match="no image folder"):
        load_ham10000(tmp_path, allow_missing=True)
