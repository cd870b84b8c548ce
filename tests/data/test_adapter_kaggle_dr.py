"""load_kaggle_dr on tiny generated trees: the paper's referable mapping and patient groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import DatasetError, load_kaggle_dr

LINES = ("image,level", "10_left,0", "10_right,1", "13_left,2", "13_right,3", "15_left,4")


@pytest.fixture
def dr_root(tmp_path: Path, write_image, write_csv) -> Path:
    write_csv(tmp_path / "trainLabels.csv", *LINES)
    for line in LINES[1:3]:
        write_image(tmp_path / f"{line.split(',')[0]}.jpeg")
    for line in LINES[3:]:
        write_image(tmp_path / "train" / f"{line.split(',')[0]}.jpeg")
    return tmp_path


def test_binary_uses_the_papers_referable_mapping(dr_root: Path) -> None:
    data = load_kaggle_dr(dr_root)
    assert data.class_names == ("no_referable_dr", "referable_dr")
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    assert data.groups.tolist() == ["10", "10", "13", "13", "15"]
    assert [Path(p).relative_to(dr_root).as_posix() for p in data.paths] == [
        "10_left.jpeg",
        "10_right.jpeg",
        "train/13_left.jpeg",
        "train/13_right.jpeg",
        "train/15_left.jpeg",
    ]


def test_grades_keep_all_five_levels(dr_root: Path) -> None:
    data = load_kaggle_dr(dr_root, binary=False)
    assert data.num_classes == 5
    assert data.labels.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("level", ["5", "-1", "2.0", "moderate"])
def test_bad_level_names_file_line_and_value(dr_root: Path, write_csv, level: str) -> None:
    write_csv(dr_root / "trainLabels.csv", *LINES, f"16_left,{level}")
    with pytest.raises(DatasetError, match=rf"trainLabels.csv: line 7: level '{level}'"):
        load_kaggle_dr(dr_root)


def test_image_without_patient_prefix_is_an_error(dr_root: Path, write_csv) -> None:
    write_csv(dr_root / "trainLabels.csv", *LINES, "sixteen,0")
    with pytest.raises(DatasetError, match=r"line 7: image 'sixteen' is not <patient>_<eye>"):
        load_kaggle_dr(dr_root)


def test_missing_csv_and_column(tmp_path: Path, write_csv) -> None:
    with pytest.raises(DatasetError, match=r"trainLabels.csv: CSV file not found"):
        load_kaggle_dr(tmp_path)
    write_csv(tmp_path / "trainLabels.csv", "image,grade", "10_left,0")
    with pytest.raises(DatasetError, match=r"trainLabels.csv: missing column\(s\) \['level'\]"):
        load_kaggle_dr(tmp_path)


def test_empty_level_is_an_error(dr_root: Path, write_csv) -> None:
    write_csv(dr_root / "trainLabels.csv", *LINES, "16_left,")
    with pytest.raises(DatasetError, match=r"trainLabels.csv: line 7: empty 'level'"):
        load_kaggle_dr(dr_root)


def test_missing_image_and_allow_missing(dr_root: Path) -> None:
    (dr_root / "train" / "13_right.jpeg").unlink()
    with pytest.raises(DatasetError, match=r"trainLabels.csv: line 5: image 13_right.jpeg"):
        load_kaggle_dr(dr_root)
    data = load_kaggle_dr(dr_root, allow_missing=True)
    assert data.skipped == ("13_right.jpeg",)
    assert data.groups.tolist() == ["10", "10", "13", "15"]
    assert data.labels.tolist() == [0, 0, 1, 1]
