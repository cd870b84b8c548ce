"""The input pipeline: decode in parallel, prepare once, cache, shuffle, batch, prefetch.

Image files are decoded and prepared by the same numpy function serving uses
(:func:`training.preprocess.prepare_image`), so a model sees identical pixels in training and in
production. Preparation happens once per image (the result is cached in memory); later epochs
only shuffle and batch, which keeps the model busy.

On the TensorFlow backend batches come from tf.data (measured as fast as feeding from memory in
``bench/train_throughput.py``). Other backends (JAX on the GPU machines, which have no
TensorFlow) get :class:`ArrayBatches`, a ``keras.utils.PyDataset`` over the prepared images in
memory with the same batch layout, shuffle-then-repeat order semantics and one-hot labels.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeAlias

import keras
import numpy as np

from training.data.base import LabeledImages
from training.preprocess import PreprocessConfig, prepare_batch, prepare_image, read_image

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow" or TYPE_CHECKING:
    import tensorflow as tf

_DECODE_THREADS = 8  # OpenCV decodes and resizes without holding the GIL


def prepared_arrays(data: LabeledImages, config: PreprocessConfig) -> np.ndarray:
    """Every image of ``data`` prepared into one float32 array (N, S, S, 3), decoded in threads."""
    if data.arrays is not None:
        return prepare_batch(data.arrays, config)
    paths = data.file_paths()
    out = np.empty((len(data), config.input_size, config.input_size, 3), dtype=np.float32)

    def load(index: int) -> None:
        out[index] = prepare_image(read_image(paths[index]), config)

    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        list(pool.map(load, range(len(data))))  # list(): re-raises the first error, naming the file
    return out


class ArrayBatches(keras.utils.PyDataset):
    """``(pixels float32 (B,S,S,3), one-hot (B,K))`` batches from prepared images in memory.

    Training order is an endless stream of permutations (permutation p drawn from ``[seed, p]``)
    cut into batches, so a batch may span two passes, as with tf.data's shuffle-then-repeat; any
    batch can be computed from its index alone, which keeps it deterministic. Evaluation order is
    one ordered pass.
    """

    def __init__(
        self, images: np.ndarray, onehot: np.ndarray, batch_size: int, training: bool, seed: int
    ) -> None:
        super().__init__()
        self.images, self.onehot = images, onehot
        self.batch_size, self.training, self.seed = batch_size, training, seed
        self._permutation: tuple[int, np.ndarray] | None = None

    @property
    def num_batches(self) -> int | None:
        """None (endless) for training, else the batches of one pass."""
        return None if self.training else self._batches_per_pass()

    def _batches_per_pass(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.training:
            rows = self._training_rows(index)
            return self.images[rows], self.onehot[rows]
        count = self._batches_per_pass()
        if not 0 <= index < count:
            raise IndexError(f"batch {index} of {count}")
        window = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[window], self.onehot[window]

    def _training_rows(self, index: int) -> np.ndarray:
        count = len(self.images)
        positions = np.arange(index * self.batch_size, (index + 1) * self.batch_size)
        passes, offsets = np.divmod(positions, count)
        return np.array([self._pass_order(p)[o] for p, o in zip(passes, offsets, strict=True)])

    def _pass_order(self, number: int) -> np.ndarray:
        cached = self._permutation
        if cached is None or cached[0] != number:
            order = np.random.default_rng([self.seed, number]).permutation(len(self.images))
            cached = (number, order)
            self._permutation = cached
        return cached[1]


Batches: TypeAlias = "tf.data.Dataset | ArrayBatches"


def array_batches(
    data: LabeledImages, config: PreprocessConfig, batch_size: int, training: bool, seed: int = 0
) -> ArrayBatches:
    """:class:`ArrayBatches` over ``data`` on any backend: batch ``i`` is a function of ``i``
    alone, which a training loop that must resume mid-stream exactly (defended training) needs."""
    onehot = np.eye(data.num_classes, dtype=np.float32)[data.labels.astype(np.int64)]
    return ArrayBatches(prepared_arrays(data, config), onehot, batch_size, training, seed)


def make_dataset(
    data: LabeledImages,
    config: PreprocessConfig,
    batch_size: int,
    training: bool,
    seed: int = 0,
) -> Batches:
    """Batches of ``(pixels float32 (B,S,S,3), one-hot labels (B,K))``.

    ``training=True`` shuffles with ``seed`` (reshuffled each pass) and repeats forever, so the
    caller controls an epoch's length with ``steps_per_epoch`` (the paper's 10 %-per-epoch
    setting); otherwise one ordered pass. tf.data on TensorFlow, :class:`ArrayBatches` elsewhere.
    """
    if BACKEND != "tensorflow":
        return array_batches(data, config, batch_size, training, seed)
    images = _prepared_images(data, config).cache()
    labels = tf.data.Dataset.from_tensor_slices(
        tf.one_hot(data.labels.astype(np.int32), data.num_classes)
    )
    dataset = tf.data.Dataset.zip((images, labels))
    if training:
        dataset = dataset.shuffle(len(data), seed=seed, reshuffle_each_iteration=True).repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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

    paths = tf.data.Dataset.from_tensor_slices(list(data.file_paths()))
    return paths.map(load_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
