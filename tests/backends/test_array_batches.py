"""The input pipeline of backends without tf.data: ``ArrayBatches`` (a ``keras.utils.PyDataset``).

It must batch like the tf.data path (same shapes, one-hot labels, shuffle-then-repeat order for
training, one ordered pass for evaluation), and be a pure function of (seed, batch index) so a
run is reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest

from training.pipeline import ArrayBatches


def _batches(training: bool, seed: int = 0) -> ArrayBatches:
    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) * np.ones((1, 4, 4, 3), np.float32)
    onehot = np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 1]]
    return ArrayBatches(images, onehot, batch_size=2, training=training, seed=seed)


def _ids(batch: tuple[np.ndarray, np.ndarray]) -> list[int]:
    return [int(v) for v in batch[0][:, 0, 0, 0]]


def test_evaluation_is_one_ordered_pass_with_a_short_last_batch():
    batches = _batches(training=False)
    assert batches.num_batches == 3
    seen = list(batches)
    assert [_ids(b) for b in seen] == [[0, 1], [2, 3], [4]]
    np.testing.assert_array_equal(seen[2][1], [[0.0, 1.0]])
    with pytest.raises(IndexError):
        batches[3]


def test_training_repeats_shuffled_passes_and_is_a_function_of_seed_and_index():
    batches = _batches(training=True, seed=7)
    assert batches.num_batches is None  # endless: fit's steps_per_epoch sets an epoch's length
    stream = [i for index in range(10) for i in _ids(batches[index])]  # four passes of five
    passes = [stream[k : k + 5] for k in range(0, 20, 5)]
    assert all(sorted(p) == [0, 1, 2, 3, 4] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes
    again = _batches(training=True, seed=7)
    assert [_ids(again[i]) for i in (9, 0, 4)] == [_ids(batches[i]) for i in (9, 0, 4)]
    other = _batches(training=True, seed=8)
    assert [_ids(other[i]) for i in range(10)] != [_ids(batches[i]) for i in range(10)]


def test_labels_travel_with_their_images():
    batches = _batches(training=True, seed=1)
    for index in range(6):
        pixels, onehot = batches[index]
        expected = np.eye(2)[[[0, 1, 0, 1, 1][i] for i in _ids((pixels, onehot))]]
        np.testing.assert_array_equal(onehot, expected)
