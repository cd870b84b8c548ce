"""Train/val/test index splits: deterministic, stratified by label and never splitting a group.

A group (lesion, patient) split across train and test leaks near-duplicates into evaluation, so
whole groups are assigned. Stratification keeps every class's share about equal across splits,
which matters for the rare HAM10000 classes (df has 115 images) and for per-class metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.data.base import DatasetError, LabeledImages

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``fractions`` as a (train, val, test) tuple; each must be positive and they must sum to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise DatasetError(f"fractions must be (train, val, test), got {values}")
    if any(not f > 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise DatasetError(f"fractions must be positive and sum to 1, got {values}")
    return values[0], values[1], values[2]


def split_indices(
    data: LabeledImages,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    use_source_split: bool = False,
) -> dict[str, np.ndarray]:
    """Sorted int64 index arrays under "train", "val", "test"; every index appears exactly once.

    With ``use_source_split`` the split is ``data.source_split`` as shipped (``fractions`` and
    ``seed`` are unused). Otherwise each group takes its majority label (ties: the lower label);
    within each label the groups are shuffled with ``seed`` and laid end to end, and a group goes to
    the split whose share of that label's images contains the group's midpoint. Each split so gets
    its fraction of each class to within one group.
    """
    if use_source_split:
        return _source_split(data)
    bounds = np.cumsum(check_fractions(fractions))
    group_ids, group_of = np.unique(data.groups, return_inverse=True)
    group_of = group_of.ravel()
    votes = np.zeros((len(group_ids), data.num_classes), dtype=np.int64)
    np.add.at(votes, (group_of, data.labels), 1)
    group_label = votes.argmax(axis=1)
    group_size = votes.sum(axis=1)

    rng = np.random.default_rng(seed)
    group_split = np.empty(len(group_ids), dtype=np.int64)
    for label in range(data.num_classes):
        members = rng.permutation(np.flatnonzero(group_label == label))
        if not members.size:
            continue
        ends = np.cumsum(group_size[members])
        midpoints = (ends - group_size[members] / 2) / ends[-1]
        group_split[members] = np.minimum(np.searchsorted(bounds, midpoints, side="right"), 2)
    image_split = group_split[group_of]
    return {name: np.flatnonzero(image_split == k) for k, name in enumerate(SPLIT_NAMES)}


def _source_split(data: LabeledImages) -> dict[str, np.ndarray]:
    """The split the source ships with, checked to name only train/val/test."""
    if data.source_split is None:
        raise DatasetError(f"{data.name}: has no source split; split by group instead")
    unknown = sorted(set(data.source_split.tolist()) - set(SPLIT_NAMES))
    if unknown:
        raise DatasetError(f"{data.name}: unknown source split value(s) {unknown}")
    return {name: np.flatnonzero(data.source_split == name) for name in SPLIT_NAMES}


def subsample_stratified(
    indices: np.ndarray, labels: np.ndarray, limit: int, seed: int = 0
) -> np.ndarray:
    """At most ``limit`` of ``indices``, sorted, keeping the proportions of ``labels[indices]``.

    For quick runs. Each class present gets its proportional share (largest remainders round up);
    while ``limit`` allows, no present class is left out entirely, so a smoke run still sees every
    class. Deterministic for a given seed.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if limit < 1:
        raise DatasetError(f"limit must be at least 1, got {limit}")
    if len(indices) <= limit:
        return np.sort(indices)
    classes, counts = np.unique(labels[indices], return_counts=True)
    exact = limit * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - quota), kind="stable")
    quota[remainder_order[: limit - quota.sum()]] += 1
    for empty in np.flatnonzero(quota == 0):
        donor = int(np.argmax(quota))
        if quota[donor] <= 1:
            break
        quota[donor] -= 1
        quota[empty] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(indices[labels[indices] == c], size=q, replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))
