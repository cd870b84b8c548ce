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
import statistics
import time

import keras
import numpy as np

from training.data.registry import DatasetSpec, load_dataset
from training.models import build_model
from training.pipeline import make_dataset, prepared_arrays
from training.preprocess import PreprocessConfig


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
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per input path")
    parser.add_argument("--architecture", default="baseline")
    args = parser.parse_args()

    data = load_dataset(DatasetSpec(kind="ham10000", path=args.data))
    data = data.subset(np.arange(args.images))
    config = PreprocessConfig(input_size=args.size)
    steps = args.images // args.batch_size
    images_per_epoch = steps * args.batch_size

    # The real pipeline (JPEG files on disk) and arrays already decoded in memory feed two
    # identical models. After one warm-up epoch each (the pipeline's decodes every file once and
    # fills its cache), timed epochs alternate between the two so that load from other processes
    # on a shared machine falls on both alike.
    pipeline_model = _compiled(args.architecture, data.num_classes, args.size)
    dataset = make_dataset(data, config, args.batch_size, training=True)
    memory_model = _compiled(args.architecture, data.num_classes, args.size)
    pixels = prepared_arrays(data, config)[:images_per_epoch]
    onehot = np.eye(data.num_classes, dtype=np.float32)[data.labels][:images_per_epoch]

    def pipeline_epoch() -> float:
        start = time.perf_counter()
        pipeline_model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        return time.perf_counter() - start

    def memory_epoch() -> float:
        start = time.perf_counter()
        memory_model.fit(pixels, onehot, batch_size=args.batch_size, epochs=1, verbose=0)
        return time.perf_counter() - start

    cold_pipeline = images_per_epoch / pipeline_epoch()
    memory_epoch()
    pipeline_rates, memory_rates = [], []
    for _ in range(args.epochs):
        pipeline_rates.append(images_per_epoch / pipeline_epoch())
        memory_rates.append(images_per_epoch / memory_epoch())
    pipeline = statistics.median(pipeline_rates)
    in_memory = statistics.median(memory_rates)
    ratios = [p / m for p, m in zip(pipeline_rates, memory_rates, strict=True)]

    result = {
        "architecture": args.architecture,
        "input_size": args.size,
        "batch_size": args.batch_size,
        "images": args.images,
        "timed_epochs": args.epochs,
        "pipeline_cold_first_epoch_img_s": round(cold_pipeline, 1),
        "pipeline_img_s": round(pipeline, 1),
        "in_memory_img_s": round(in_memory, 1),
        "ratio_pipeline_vs_in_memory": round(statistics.median(ratios), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "backend": keras.backend.backend(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
