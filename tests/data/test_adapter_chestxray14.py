"""load_chestxray14 on tiny generated trees in the official images_NNN/images layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import DatasetError, load_chestxray14

HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age"
ROWS = (
    "00000001_000.png,Cardiomegaly,0,1,58",
    "00000001_001.png,Cardiomegaly|Pneumothorax,1,1,58",
    "00000002_000.png,No Finding,0,2,81",
    "00000003_000.png,Pneumothorax,0,3,74",
)


@pytest.fixture
def cxr_root(tmp_path: Path, write_image, write_csv) -> Path:
    write_csv(tmp_path / "Data_Entry_2017.csv", HEADER, *ROWS)
    write_image(tmp_path / "images_001" / "images" / "00000001_000.png", shape=(8, 8))
    write_image(tmp_path / "images_001" / "images" / "00000001_001.png", shape=(8, 8))
    write_image(tmp_path / "images_002" / "images" / "00000002_000.png", shape=(8, 8))
    write_image(tmp_path / "images" / "00000003_000.png", shape=(8, 8))
    return tmp_path


def test_pneumothorax_labels_and_patient_groups(cxr_root: Path) -> None:
    data = load_chestxray14(cxr_root)
    assert data.class_names == ("no_pneumothorax", "pneumothorax")
    assert data.labels.tolist() == [0, 1, 0, 1]
    assert data.groups.tolist() == ["1", "1", "2", "3"]
    assert [Path(p).parent.parent.name for p in data.paths] == [
        "images_001",
        "images_001",
        "images_002",
        cxr_root.name,
    ]


def test_other_finding_and_flat_layout(tmp_path: Path, write_image, write_csv) -> None:
    write_csv(tmp_path / "Data_Entry_2017.csv", HEADER, *ROWS)
    for row in ROWS:
        write_image(tmp_path / row.split(",")[0], shape=(8, 8))
    data = load_chestxray14(tmp_path, finding="Cardiomegaly")
    assert data.class_names == ("no_cardiomegaly", "cardiomegaly")
    assert data.labels.tolist() == [1, 1, 0, 0]


def test_unknown_finding_argument_is_an_error(cxr_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown ChestX-ray14 finding 'pneumothorax'"):
        load_chestxray14(cxr_root, finding="pneumothorax")


def test_unknown_finding_label_names_file_line_and_value(cxr_root: Path, write_csv) -> None:
    write_csv(
        cxr_root / "Data_Entry_2017.csv", HEADER, *ROWS, "00000004_000.png,Pneumothroax,0,4,9"
    )
    with pytest.raises(
        DatasetError, match=r"Data_Entry_2017.csv: line 6: unknown finding\(s\) \['Pneumothroax'\]"
    ):
        load_chestxray14(cxr_root)


def test_missing_csv_and_column(tmp_path: Path, write_csv) -> None:
    with pytest.raises(DatasetError, match=r"Data_Entry_2017.csv: CSV file not found"):
        load_chestxray14(tmp_path)
    write_csv(tmp_path / "Data_Entry_2017.csv", "Image Index,Finding Labels", "a.png,Mass")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['Patient ID'\]"):
        load_chestxray14(tmp_path)


def test_missing_image_and_allow_missing(cxr_root: Path) -> None:
    (cxr_root / "images_002" / "images" / "00000002_000.png").unlink()
    with pytest.raises(DatasetError, match=r"Data_Entry_2017.csv: line 4: image 00000002_000.png"):
        load_chestxray14(cxr_root)
    data = load_chestxray14(cxr_root, allow_missing=True)
    assert data.skipped == ("00000002_000.png",)
    assert data.groups.tolist() == ["1", "1", "3"]
