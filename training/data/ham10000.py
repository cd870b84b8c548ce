"""HAM10000 dermoscopy images (paper task: 7-class skin lesions).

Reads ``HAM10000_metadata.csv`` and finds ``<image_id>.jpg`` either in ``images/`` (the staged
layout) or in ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/`` (the Kaggle layout).
Groups are lesion ids: one lesion photographed several times must stay in one split, or the test
set would contain near-copies of training images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.base import DatasetError, LabeledImages, locate_files, read_csv_rows

# Alphabetical by dx, which is also the DermaMNIST label order.
HAM10000_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
IMAGE_DIRS: tuple[str, ...] = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2")
SPLITS: frozenset[str] = frozenset({"train", "val", "test"})


def load_ham10000(root: str | Path, allow_missing: bool = False) -> LabeledImages:
    """All HAM10000 images listed in the metadata, labelled by ``dx`` and grouped by lesion.

    If ``splits.csv`` (image_id, lesion_id, dx, label, split) sits next to the metadata, its split
    becomes ``source_split``; it must cover every image and agree with the metadata's lesion and
    dx, since a disagreement means the two files describe different data.
    """
    root = Path(root)
    metadata = root / "HAM10000_metadata.csv"
    rows = read_csv_rows(metadata, ("lesion_id", "image_id", "dx"))
    class_index = {name: i for i, name in enumerate(HAM10000_CLASSES)}
    seen: set[str] = set()
    for line, row in rows:
        if row["dx"] not in class_index:
            raise DatasetError(
                f"{metadata}: line {line}: unknown dx {row['dx']!r}; expected one of "
                f"{list(HAM10000_CLASSES)}"
            )
        if row["image_id"] in seen:
            raise DatasetError(f"{metadata}: line {line}: duplicate image_id {row['image_id']!r}")
        seen.add(row["image_id"])

    directories = [root / name for name in IMAGE_DIRS]
    if not any(d.is_dir() for d in directories):
        raise DatasetError(f"{root}: no image folder; expected one of {list(IMAGE_DIRS)}")
    wanted = [(line, f"{row['image_id']}.jpg") for line, row in rows]
    paths, skipped = locate_files(wanted, directories, metadata, allow_missing)
    kept = [(row, path) for (_, row), path in zip(rows, paths, strict=True) if path is not None]
    if not kept:
        raise DatasetError(f"{metadata}: none of the {len(rows)} listed images was found")

    splits_csv = root / "splits.csv"
    return LabeledImages(
        name="ham10000",
        class_names=HAM10000_CLASSES,
        labels=np.array([class_index[row["dx"]] for row, _ in kept], dtype=np.int64),
        groups=np.array([row["lesion_id"] for row, _ in kept]),
        paths=tuple(path for _, path in kept),
        source_split=_source_split(splits_csv, kept) if splits_csv.exists() else None,
        skipped=skipped,
    )


def _source_split(splits_csv: Path, kept: list[tuple[dict[str, str], str]]) -> np.ndarray:
    """The ``split`` column of ``splits.csv``, in the order of ``kept`` metadata rows."""
    rows = read_csv_rows(splits_csv, ("image_id", "lesion_id", "dx", "label", "split"))
    by_image: dict[str, dict[str, str]] = {}
    for line, row in rows:
        if row["split"] not in SPLITS:
            raise DatasetError(
                f"{splits_csv}: line {line}: unknown split {row['split']!r}; "
                f"expected one of {sorted(SPLITS)}"
            )
        expected = HAM10000_CLASSES.index(row["dx"]) if row["dx"] in HAM10000_CLASSES else None
        if row["label"] != str(expected):
            raise DatasetError(
                f"{splits_csv}: line {line}: dx {row['dx']!r} with label {row['label']!r} does "
                f"not match the class order {list(HAM10000_CLASSES)}"
            )
        if row["image_id"] in by_image:
            raise DatasetError(f"{splits_csv}: line {line}: duplicate image_id {row['image_id']!r}")
        by_image[row["image_id"]] = row
    split = []
    for meta, _ in kept:
        listed = by_image.get(meta["image_id"])
        if listed is None:
            raise DatasetError(f"{splits_csv}: no row for image {meta['image_id']!r}")
        if (listed["lesion_id"], listed["dx"]) != (meta["lesion_id"], meta["dx"]):
            raise DatasetError(
                f"{splits_csv}: image {meta['image_id']!r} has lesion/dx "
                f"{listed['lesion_id']}/{listed['dx']} but the metadata says "
                f"{meta['lesion_id']}/{meta['dx']}"
            )
        split.append(listed["split"])
    return np.array(split)


LESION_MASKS_FILE = "lesion_masks_200x150.npz"


def load_lesion_masks(masks_file: str | Path, image_paths: tuple[str, ...]) -> np.ndarray:
    """The binary lesion masks ``(N, H, W)`` (1 = lesion) of the images at ``image_paths``.

    Masks are matched by image id (the file's stem), never by position, so a subset or a
    reordered dataset gets the right mask for every image.
    """
    with np.load(masks_file) as archive:
        ids, masks = archive["image_ids"], archive["masks"]
    position = {str(image_id): i for i, image_id in enumerate(ids)}
    wanted = [Path(path).stem for path in image_paths]
    missing = [image_id for image_id in wanted if image_id not in position]
    if missing:
        raise DatasetError(
            f"{masks_file}: no lesion mask for {len(missing)} images, e.g. {missing[0]}"
        )
    return masks[[position[image_id] for image_id in wanted]].astype(bool)
