"""The tf.data input pipeline: decode in parallel, prepare once, cache, shuffle, batch, prefetch.

Image files are decoded and prepared by the same numpy function serving uses
(:func:`training.preprocess.prepare_image`), so a model sees identical pixels in training and in
production. Preparation happens once per image (the result is cached in memory); later epochs
only shuffle and batch, which keeps the model busy.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.data.base import LabeledImages
from training.preprocess import PreprocessConfig, prepare_batch, prepare_image, read_image


def prepared_arrays(data: LabeledImages, config: PreprocessConfig) -> np.ndarray:
    """Every image of ``data`` prepared into one float32 array (N, S, S, 3); for small sets."""
    if data.arrays is not None:
        return prepare_batch(data.arrays, config)
    out = np.empty((len(data), config.input_size, config.input_size, 3), dtype=np.float32)
    for i, path in enumerate(data.paths):
        out[i] = prepare_image(read_image(path), config)
    return out


def _prepared_images(data: LabeledImages, config: PreprocessConfig) -> tf.data.Dataset:
    """A dataset of prepared float32 images, decoded in parallel for file-backed data."""
    size = config.input_size
    if data.arrays is not None:
        return tf.data.Dataset.from_tensor_slices(prepare_batch(data.arrays, config))

    def load(path: bytes) -> np.ndarray:
        return prepare_image(read_image(path.decode()), config)

    def load_op(path: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(load, [path], tf.float32, stateful=False)
        return tf.ensure_shape(image, (size, size, 3))

    paths = tf.data.Dataset.from_tensor_slices(list(data.paths))
    return paths.map(load_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_dataset(
    data: LabeledImages,
    config: PreprocessConfig,
    batch_size: int,
    training: bool,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ``(pixels float32 (B,S,S,3), one-hot labels (B,K))``.

    ``training=True`` shuffles with ``seed`` (reshuffled each pass) and repeats forever, so the
    caller controls an epoch's length with ``steps_per_epoch`` (the paper's 10 %-per-epoch
    setting); otherwise one ordered pass.
    """
    images = _prepared_images(data, config).cache()
    labels = tf.data.Dataset.from_tensor_slices(
        tf.one_hot(data.labels.astype(np.int32), data.num_classes)
    )
    dataset = tf.data.Dataset.zip((images, labels))
    if training:
        dataset = dataset.shuffle(len(data), seed=seed, reshuffle_each_iteration=True).repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
