"""load_image_folders on tiny generated class-per-folder trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import DatasetError, load_image_folders


def test_sorted_folders_are_classes_and_stems_are_groups(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "pneumonia" / "b.JPEG")
    write_image(tmp_path / "pneumonia" / "sub" / "c.png")
    write_image(tmp_path / "normal" / "a.png")
    write_image(tmp_path / "normal" / "b.TIF")
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    (tmp_path / "normal" / ".DS_Store").write_text("")
    (tmp_path / "README.md").write_text("")
    data = load_image_folders(tmp_path)
    assert data.class_names == ("normal", "pneumonia")
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert [Path(p).relative_to(tmp_path).as_posix() for p in data.paths] == [
        "normal/a.png",
        "normal/b.TIF",
        "pneumonia/b.JPEG",
        "pneumonia/sub/c.png",
    ]
    assert data.groups.tolist() == ["a", "b", "b", "c"]


def test_empty_class_folder_is_an_error(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("")
    with pytest.raises(DatasetError, match=r"/b: class folder holds no image"):
        load_image_folders(tmp_path)


def test_no_classes_or_no_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_image_folders(tmp_path)
    with pytest.raises(DatasetError, match="image folder not found"):
        load_image_folders(tmp_path / "absent")
