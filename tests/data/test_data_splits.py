"""split_indices and subsample_stratified on synthetic labels and groups."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import (
    DatasetError,
    LabeledImages,
    check_fractions,
    split_indices,
    subsample_stratified,
)


def _synthetic(n_groups: int = 600, seed: int = 1) -> LabeledImages:
    """Groups of 1-4 images, one label per group, three classes of very different sizes."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_groups)
    group_labels = rng.choice(3, size=n_groups, p=[0.75, 0.2, 0.05])
    groups = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    labels = np.repeat(group_labels, sizes)
    order = rng.permutation(len(labels))  # groups interleaved, as in a real table
    return LabeledImages(
        name="synthetic",
        class_names=("a", "b", "c"),
        labels=labels[order],
        groups=groups[order],
        arrays=np.zeros((len(labels), 2, 2), dtype=np.uint8),
    )


def _assert_partition(splits: dict[str, np.ndarray], n: int) -> None:
    assert list(splits) == ["train", "val", "test"]
    for indices in splits.values():
        assert indices.dtype == np.int64
        assert np.all(np.diff(indices) > 0), "sorted and unique"
    assert np.array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(n))


def _assert_no_group_straddles(splits: dict[str, np.ndarray], groups: np.ndarray) -> None:
    seen = [set(groups[indices].tolist()) for indices in splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_every_index_once_and_no_group_straddles() -> None:
    data = _synthetic()
    splits = split_indices(data, seed=3)
    _assert_partition(splits, len(data))
    _assert_no_group_straddles(splits, data.groups)


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    data = _synthetic()
    first, again, other = (split_indices(data, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["test"], other["test"])


def test_sizes_follow_the_fractions_and_each_class_is_stratified() -> None:
    data = _synthetic(n_groups=2000)
    splits = split_indices(data, fractions=(0.6, 0.15, 0.25))
    for name, fraction in zip(splits, (0.6, 0.15, 0.25), strict=True):
        assert len(splits[name]) / len(data) == pytest.approx(fraction, abs=0.01)
        for label in range(3):
            share = np.mean(data.labels[splits[name]] == label)
            assert share == pytest.approx(np.mean(data.labels == label), abs=0.02)


def test_mixed_label_group_follows_its_majority_and_stays_whole() -> None:
    labels = np.array([1, 1, 0] + [0] * 20 + [1] * 10)
    groups = np.array(["mixed"] * 3 + [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(10)])
    data = LabeledImages("mixed", ("0", "1"), labels, groups, arrays=np.zeros((33, 1, 1), np.uint8))
    for seed in range(5):
        splits = split_indices(data, seed=seed)
        _assert_partition(splits, 33)
        _assert_no_group_straddles(splits, groups)


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.3, 0.0), (0.8, 0.1, 0.2), (0.5, 0.5), (0.9, 0.2, -0.1), (1, 1, 1)]
)
def test_bad_fractions_are_rejected(fractions) -> None:
    with pytest.raises(DatasetError, match="fractions"):
        split_indices(_synthetic(50), fractions=fractions)
    with pytest.raises(DatasetError, match="fractions"):
        check_fractions(fractions)


def test_source_split_is_used_as_is() -> None:
    source = np.array(["test", "train", "val", "train", "test"])
    data = LabeledImages(
        "s", ("x",), np.zeros(5, np.int64), np.arange(5).astype(str),
        arrays=np.zeros((5, 1, 1), np.uint8), source_split=source,
    )  # fmt: skip
    splits = split_indices(data, use_source_split=True)
    assert {k: v.tolist() for k, v in splits.items()} == {
        "train": [1, 3],
        "val": [2],
        "test": [0, 4],
    }


def test_source_split_absent_or_unknown_is_an_error() -> None:
    with pytest.raises(DatasetError, match="synthetic: has no source split"):
        split_indices(_synthetic(10), use_source_split=True)
    data = LabeledImages(
        "odd", ("x",), np.zeros(2, np.int64), np.array(["a", "b"]),
        arrays=np.zeros((2, 1, 1), np.uint8), source_split=np.array(["train", "holdout"]),
    )  # fmt: skip
    with pytest.raises(DatasetError, match=r"odd: unknown source split value\(s\) \['holdout'\]"):
        split_indices(data, use_source_split=True)


def test_subsample_keeps_proportions_and_every_class() -> None:
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    indices = np.arange(0, 1000)
    sample = subsample_stratified(indices, labels, limit=100, seed=0)
    assert len(sample) == 100 and np.all(np.diff(sample) > 0)
    assert np.bincount(labels[sample]).tolist() == [90, 9, 1]
    tiny = subsample_stratified(indices, labels, limit=3, seed=0)
    assert sorted(labels[tiny].tolist()) == [0, 1, 2]
    assert np.array_equal(sample, subsample_stratified(indices, labels, limit=100, seed=0))
    assert not np.array_equal(sample, subsample_stratified(indices, labels, limit=100, seed=1))
    assert np.array_equal(subsample_stratified(indices[::-1], labels, limit=5000), indices)
