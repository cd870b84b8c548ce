"""Training images/s through the real input pipeline vs the same model fed in-memory arrays.

Both runs train the same architecture with the same batch size and step count in one process on
the same machine; the printed ratio (pipeline / in-memory, goal >= 0.9) says how much the tf.data
pipeline (JPEG decode, resize, cache, shuffle, prefetch) costs the model. The pipeline's first pass
decodes every image; that cold pass is reported separately from the steady state.

The defended-training row times an epoch of the per-step loop defended recipes train with
(``training.fit``: build the batch against the current weights, then one ``train_on_batch``) for
clean batches, PGD adversarial training and TRADES with ``--adversarial-steps`` inner steps, and
compares each to the ideal cost: PGD-AT adds ``steps`` input gradients per step, so its ideal is
``(steps + 1)×`` clean; TRADES adds one more clean forward pass and trains on a doubled batch,
so its ideal is taken as ``(steps + 2)×``.

    .venv/bin/python bench/train_throughput.py --images 512 --size 64 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import keras
import numpy as np
from interleaved import interleaved_medians

from training import defenses
from training.config import TrainConfig
from training.data.base import LabeledImages
from training.data.registry import DatasetSpec, load_dataset
from training.fit import compile_for_training
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


def _pipeline_row(
    args: argparse.Namespace, data: LabeledImages, config: PreprocessConfig
) -> dict[str, object]:
    """Images/s through the real input pipeline vs in-memory arrays (see the module doc)."""
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

    return {
        "pipeline_cold_first_epoch_img_s": round(cold_pipeline, 1),
        "pipeline_img_s": round(pipeline, 1),
        "in_memory_img_s": round(in_memory, 1),
        "ratio_pipeline_vs_in_memory": round(statistics.median(ratios), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
    }


def _defended_epochs(
    args: argparse.Namespace, num_classes: int, pixels: np.ndarray, onehot: np.ndarray
) -> dict[str, object]:
    """Seconds per epoch of the defended loop: clean, PGD-AT, TRADES (median of the rounds)."""
    steps = args.adversarial_steps
    recipes = {
        "clean": TrainConfig(),
        "pgd": TrainConfig(adversarial={"method": "pgd", "epsilon": 2, "steps": steps}),
        "trades": TrainConfig(adversarial={"method": "trades", "epsilon": 2, "steps": steps}),
    }
    models = {}
    for name, config in recipes.items():
        keras.utils.set_random_seed(0)
        models[name] = build_model(args.architecture, num_classes=num_classes, input_size=args.size)
        compile_for_training(models[name], config)
    count = min(args.defense_images, len(pixels)) // args.batch_size
    weights = np.ones(args.batch_size, np.float32)

    def epoch(name: str) -> None:
        model, config = models[name], recipes[name]
        for batch in range(count):
            rows = slice(batch * args.batch_size, (batch + 1) * args.batch_size)
            x, y, w = defenses.defended_batch(
                model, config, pixels[rows], onehot[rows], weights, 0, batch, count
            )
            model.train_on_batch(x, y, sample_weight=w)

    # the warm-up epoch compiles every function a recipe uses
    seconds = interleaved_medians({name: partial(epoch, name) for name in recipes}, args.epochs)
    ratios = {name: seconds[name] / seconds["clean"] for name in ("pgd", "trades")}
    ideal = {"pgd": steps + 1, "trades": steps + 2}
    return {
        "adversarial_steps": steps,
        "images": count * args.batch_size,
        "s_per_epoch": {name: round(value, 3) for name, value in seconds.items()},
        "ratio_vs_clean": {name: round(value, 2) for name, value in ratios.items()},
        "ideal_ratio": ideal,
        "ratio_vs_ideal": {name: round(ratios[name] / ideal[name], 2) for name in ideal},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ham10000_200x150", help="HAM10000 folder")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per input path")
    parser.add_argument("--architecture", default="baseline")
    parser.add_argument("--adversarial-steps", type=int, default=3, help="PGD/TRADES inner steps")
    parser.add_argument(
        "--defense-images", type=int, default=128, help="images per defended-training epoch"
    )
    parser.add_argument("--skip-pipeline", action="store_true", help="only the defended row")
    args = parser.parse_args()

    data = load_dataset(DatasetSpec(kind="ham10000", path=args.data))
    data = data.subset(np.arange(args.images))
    config = PreprocessConfig(input_size=args.size)
    result: dict[str, object] = {
        "architecture": args.architecture,
        "input_size": args.size,
        "batch_size": args.batch_size,
        "images": args.images,
        "timed_epochs": args.epochs,
        "backend": keras.backend.backend(),
    }
    if not args.skip_pipeline:
        result.update(_pipeline_row(args, data, config))
    pixels = prepared_arrays(data, config)
    onehot = np.eye(data.num_classes, dtype=np.float32)[data.labels]
    result["defended_training"] = _defended_epochs(args, data.num_classes, pixels, onehot)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
