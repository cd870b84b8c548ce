"""The tf.data pipeline: the same pixels from files as from memory, and named decode errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from training.data.base import LabeledImages
from training.pipeline import make_dataset, prepared_arrays
from training.preprocess import PreprocessConfig


def _file_backed(tmp_path, arrays: np.ndarray) -> LabeledImages:
    paths = []
    for i, image in enumerate(arrays):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        paths.append(str(path))
    return LabeledImages(
        name="files",
        class_names=("a", "b"),
        labels=np.array([0, 1, 0, 1, 1]),
        groups=np.arange(5).astype(str),
        paths=tuple(paths),
    )


def test_files_and_arrays_give_identical_batches(tmp_path):
    arrays = np.random.default_rng(0).integers(0, 256, size=(5, 30, 20, 3), dtype=np.uint8)
    files = _file_backed(tmp_path, arrays)
    memory = LabeledImages(
        name="mem", class_names=("a", "b"), labels=files.labels, groups=files.groups, arrays=arrays
    )
    config = PreprocessConfig(input_size=32)
    from_files = list(make_dataset(files, config, batch_size=2, training=False))
    from_memory = list(make_dataset(memory, config, batch_size=2, training=False))
    assert [b[0].shape[0] for b in from_files] == [2, 2, 1]
    for (x1, y1), (x2, y2) in zip(from_files, from_memory, strict=True):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    np.testing.assert_array_equal(prepared_arrays(files, config), prepared_arrays(memory, config))


def test_training_batches_repeat_shuffled_and_one_hot(tmp_path):
    arrays = np.zeros((5, 8, 8, 3), np.uint8)
    files = _file_backed(tmp_path, arrays)
    batches = list(make_dataset(files, PreprocessConfig(input_size=32), 4, True).take(3))
    assert len(batches) == 3  # more than one pass: it repeats
    assert batches[0][1].shape == (4, 2)
    assert np.all(batches[0][1].numpy().sum(axis=1) == 1)


def test_an_unreadable_file_fails_the_pipeline_naming_the_file(tmp_path):
    files = _file_backed(tmp_path, np.zeros((5, 8, 8, 3), np.uint8))
    (tmp_path / "img3.png").write_bytes(b"truncated")
    with pytest.raises(tf.errors.InvalidArgumentError, match="img3.png"):
        list(make_dataset(files, PreprocessConfig(input_size=32), 2, False))
