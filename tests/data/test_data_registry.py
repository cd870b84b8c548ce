"""DatasetSpec validation, path resolution, dispatch to the adapters and splits_for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from training.data import (
    DatasetError,
    DatasetSpec,
    data_dir,
    load_dataset,
    resolve_path,
    splits_for,
)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(tmp_path))
    return tmp_path


def test_relative_paths_resolve_under_the_data_dir(data_root: Path) -> None:
    assert data_dir() == data_root
    assert resolve_path("retinamnist/retinamnist.npz") == data_root / "retinamnist/retinamnist.npz"
    assert resolve_path("/elsewhere/x.npz") == Path("/elsewhere/x.npz")


def test_data_dir_defaults_to_shared_data_beside_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDROBUST_DATA_DIR", raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert data_dir() == repo.parent / "shared" / "data"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "ham10000", "path": "x", "colour": 1}, "Extra inputs are not permitted"),
        ({"kind": "imagenet", "path": "x"}, "kind"),
        ({"kind": "ham10000", "path": "x", "task": "derma"}, "task applies only to kind"),
        ({"kind": "medmnist", "path": "x", "finding": "Mass"}, "finding applies only to kind"),
        ({"kind": "folders", "path": "x", "allow_missing": True}, "allow_missing applies only"),
        ({"kind": "medmnist", "path": "x", "task": "retina"}, "task"),
        ({"kind": "kaggle_dr", "path": "x", "split": "source"}, "ships no source split"),
        ({"kind": "folders", "path": "x", "fractions": (0.5, 0.5, 0.0)}, "fractions must be"),
        ({"kind": "folders", "path": "x", "limit_per_split": 0}, "greater than or equal to 1"),
        ({"kind": "folders", "path": "x", "class_names": ["only"]}, "at least 2 items"),
        ({"kind": "folders", "path": "x", "class_names": ["a", "a"]}, "repeated: \\['a'\\]"),
        ({"kind": "folders", "path": "x", "class_names": ["a", " "]}, "1-64 printable"),
        ({"kind": "folders", "path": "x", "class_names": ["a", "b\tc"]}, "1-64 printable"),
        ({"kind": "folders", "path": "x", "class_names": ["a", "x" * 65]}, "1-64 printable"),
    ],
)
def test_invalid_specs_are_rejected(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DatasetSpec(**fields)


def test_medmnist_spec_loads_with_task_groups_and_source_split(data_root: Path, write_csv) -> None:
    split_sizes = {"train": 6, "val": 2, "test": 2}
    arrays = {}
    for split, n in split_sizes.items():
        arrays[f"{split}_images"] = np.zeros((n, 4, 4), np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).astype(np.uint8)[:, None]
        arrays[f"{split}_ids"] = np.array([f"{split}{i}" for i in range(n)])
    np.savez(data_root / "r.npz", **arrays)
    write_csv(
        data_root / "groups.csv",
        "image_index,patient_id",
        *(f"{s}{i},p{i // 2}" for s, n in split_sizes.items() for i in range(n)),
    )
    spec = DatasetSpec(
        kind="medmnist", path="r.npz", task="retina-binary", groups_csv="groups.csv",
        split="source", limit_per_split=4,
    )  # fmt: skip
    data = load_dataset(spec)
    assert data.labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert data.groups.tolist()[:4] == ["p0", "p0", "p1", "p1"]
    splits = splits_for(spec, data)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 2, "test": 2}
    assert set(splits["train"].tolist()) <= set(range(6))
    assert np.bincount(data.labels[splits["train"]]).tolist() == [2, 2]


def test_group_split_with_limit_is_deterministic(data_root: Path, write_image) -> None:
    for k in range(30):
        write_image(data_root / "tree" / ("sick" if k % 3 == 0 else "well") / f"{k}.png")
    spec = DatasetSpec(kind="folders", path="tree", seed=4, limit_per_split=5)
    data = load_dataset(spec)
    assert data.class_names == ("sick", "well")
    splits = splits_for(spec, data)
    assert [len(v) for v in splits.values()] == [5, 3, 5]
    assert all(np.array_equal(splits[k], splits_for(spec, data)[k]) for k in splits)
    assert all(set(data.labels[v].tolist()) == {0, 1} for v in splits.values())


def test_each_path_kind_dispatches(data_root: Path, write_image, write_csv) -> None:
    write_csv(data_root / "ham/HAM10000_metadata.csv", "lesion_id,image_id,dx", "L1,I1,df")
    write_image(data_root / "ham/images/I1.jpg")
    write_csv(data_root / "dr/trainLabels.csv", "image,level", "7_left,3", "7_right,1")
    write_image(data_root / "dr/train/7_left.jpeg")
    write_csv(
        data_root / "cxr/Data_Entry_2017.csv",
        "Image Index,Finding Labels,Patient ID",
        "a.png,Mass|Edema,9",
    )
    write_image(data_root / "cxr/images/a.png")

    ham = load_dataset(DatasetSpec(kind="ham10000", path="ham"))
    assert (ham.name, ham.labels.tolist()) == ("ham10000", [3])
    dr = load_dataset(DatasetSpec(kind="kaggle_dr", path="dr", binary=False, allow_missing=True))
    assert (dr.labels.tolist(), dr.skipped) == ([3], ("7_right.jpeg",))
    cxr = load_dataset(DatasetSpec(kind="chestxray14", path="cxr", finding="Edema"))
    assert (cxr.class_names[1], cxr.labels.tolist()) == ("edema", [1])


def test_class_names_rename_any_kind_and_must_count_its_classes(
    data_root: Path, write_image
) -> None:
    for k in range(4):
        write_image(data_root / "tree" / ("sick" if k % 2 else "well") / f"{k}.png")
    renamed = load_dataset(
        DatasetSpec(kind="folders", path="tree", class_names=(" ill ", "healthy"))
    )
    assert renamed.class_names == ("ill", "healthy")  # stripped; in sorted-folder order
    assert (
        renamed.labels.tolist()
        == load_dataset(DatasetSpec(kind="folders", path="tree")).labels.tolist()
    )
    with pytest.raises(
        DatasetError,
        match=r"tree \(folders\): class_names lists 3 names but the data has 2 classes "
        r"\(sick, well\)",
    ):
        load_dataset(DatasetSpec(kind="folders", path="tree", class_names=("a", "b", "c")))
