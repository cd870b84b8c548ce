"""Training images/s through the real input pipeline vs the same model fed in-memory arrays.

Both runs train the same architecture with the same batch size and step count in one process on
the same machine; the printed ratio (pipeline / in-memory, goal >= 0.9) says how much the tf.data
pipeline (JPEG decode, resize, cache, shuffle, prefetch) costs the model. The pipeline's first pass
decodes every image; that cold pass is reported separately from the steady state.

    .venv/bin/python bench/train_throughput.py --images 512 --size 64 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

from training.data.registry import DatasetSpec, load_dataset
from training.models import build_model
from training.pipeline import make_dataset, prepared_arrays
from training.preprocess import PreprocessConfig


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _compiled(architecture: str, num_classes: int, size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model(architecture, num_classes=num_classes, input_size=size)
    model.compile(
        keras.optimizers.Adam(1e-3, epsilon=0.1),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ham10000_200x150", help="HAM10000 folder")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the cold one")
    parser.add_argument("--architecture", default="baseline")
    args = parser.parse_args()

    data = load_dataset(DatasetSpec(kind="ham10000", path=args.data))
    data = data.subset(np.arange(args.images))
    config = PreprocessConfig(input_size=args.size)
    steps = args.images // args.batch_size
    images_per_epoch = steps * args.batch_size

    # 1. the real pipeline, from JPEG files on disk
    model = _compiled(args.architecture, data.num_classes, args.size)
    timer = _EpochTimer()
    dataset = make_dataset(data, config, args.batch_size, training=True)
    model.fit(
        dataset,
        epochs=1 + args.epochs,
        steps_per_epoch=steps,
        callbacks=[timer],
        verbose=0,
        shuffle=False,
    )
    cold_pipeline = images_per_epoch / timer.seconds[0]
    pipeline = images_per_epoch * args.epochs / sum(timer.seconds[1:])

    # 2. the same model fed arrays already in memory (decoded and prepared beforehand)
    pixels = prepared_arrays(data, config)
    onehot = np.eye(data.num_classes, dtype=np.float32)[data.labels]
    model = _compiled(args.architecture, data.num_classes, args.size)
    timer = _EpochTimer()
    model.fit(
        pixels[:images_per_epoch],
        onehot[:images_per_epoch],
        batch_size=args.batch_size,
        epochs=1 + args.epochs,
        callbacks=[timer],
        verbose=0,
        shuffle=True,
    )
    in_memory = images_per_epoch * args.epochs / sum(timer.seconds[1:])

    result = {
        "architecture": args.architecture,
        "input_size": args.size,
        "batch_size": args.batch_size,
        "images": args.images,
        "timed_epochs": args.epochs,
        "pipeline_cold_first_epoch_img_s": round(cold_pipeline, 1),
        "pipeline_img_s": round(pipeline, 1),
        "in_memory_img_s": round(in_memory, 1),
        "ratio_pipeline_vs_in_memory": round(pipeline / in_memory, 3),
        "backend": keras.backend.backend(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
