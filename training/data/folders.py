"""A plain class-per-folder image tree, for data that ships without a table (or a user's own).

``root/<class>/**/<image>``: the sorted sub-folder names are the class names, so the class index
does not depend on the order the file system lists them in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.base import DatasetError, LabeledImages

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def load_image_folders(root: str | Path) -> LabeledImages:
    """Every image file below each class folder of ``root`` (searched recursively).

    Only files with an image suffix (any case) count, and hidden files and folders (names starting
    with ".") are ignored, so OS litter such as ``.DS_Store`` is not an image. Each file stem is its
    own group: the same stem under two classes is one picture filed twice, and must not be
    split apart.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder not found")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders")
    paths: list[Path] = []
    labels: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        files = sorted(
            path
            for path in class_dir.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES
            and path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(class_dir).parts)
        )
        if not files:
            raise DatasetError(
                f"{class_dir}: class folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        paths += files
        labels += [index] * len(files)
    return LabeledImages(
        name=root.name,
        class_names=tuple(d.name for d in class_dirs),
        labels=np.array(labels, dtype=np.int64),
        groups=np.array([path.stem for path in paths]),
        paths=tuple(str(path) for path in paths),
    )
