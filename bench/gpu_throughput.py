"""Throughput of this project's own code paths next to the GPU anchor's reference figures.

``../shared/bench/gpu_anchor.py`` measured the ceiling: raw Keras-JAX ResNet-50 calls. This
measures what the project runs, the same way: 224 px, inference and input-gradient batches of
256, training batches of 128, two warm-up calls then 20 timed ones, ``float32`` and
``mixed_bfloat16``, baseline and attention (the anchor's attention head is our ``paper``
variant: a 3×3 convolution over all channels). Rows and their ratio to the anchor's row:

- ``infer_img_s``: :func:`training.gradients.logits`, what prediction and evaluation call;
- ``input_grad_img_s``: :func:`training.gradients.loss_input_gradient`, the unit of FGSM/PGD;
- ``pgd_image_steps_s``: a whole 10-step PGD-L∞ attack (random start, projection, the numpy
  work around each gradient) per image-step, against the anchor's input-gradient rate;
- ``train_img_s``: ``train_on_batch`` of a model compiled as :func:`training.fit.train` does;
- ``fit_img_s``: ``model.fit`` over the training input pipeline (tf.data on TensorFlow,
  ``ArrayBatches`` elsewhere), one epoch of 20 steps after a warm-up epoch: what a run sees.

Runs on either Keras backend (``KERAS_BACKEND``). ``--small``: tiny sizes for a CPU dry run.

    KERAS_BACKEND=jax python bench/gpu_throughput.py --anchor gpu_anchor-h100-result.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from training import gradients
from training.attacks import make_attack
from training.config import TrainConfig
from training.data.base import LabeledImages
from training.devices import describe_devices
from training.fit import compile_for_training
from training.models import build_model
from training.pipeline import make_dataset
from training.preprocess import PreprocessConfig

DEFAULT_ANCHOR = Path(__file__).resolve().parents[2] / "shared/bench/gpu_anchor-h100-result.json"
CLASSES = 7
PGD_STEPS = 10


def timed(call: Callable[[], object], repeats: int) -> float:
    """Seconds per call after two untimed calls (compile, warm), as the anchor's ``timeit``."""
    call()
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


class _EpochClock(keras.callbacks.Callback):
    """Wall time of each epoch; the backend syncs its state before ``on_epoch_end``."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def measure(
    policy: str, architecture: str, size: int, infer_batch: int, train_batch: int, repeats: int
) -> dict[str, float]:
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = build_model(architecture, num_classes=CLASSES, input_size=size, weights=None)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (infer_batch, size, size, 3)).astype(np.float32)
    labels = np.arange(infer_batch) % CLASSES
    onehot = np.eye(CLASSES, dtype=np.float32)[labels]
    row = {"params": int(model.count_params())}
    row["infer_img_s"] = infer_batch / timed(lambda: gradients.logits(model, pixels), repeats)
    row["input_grad_img_s"] = infer_batch / timed(
        lambda: gradients.loss_input_gradient(model, pixels, onehot), repeats
    )
    pgd = make_attack("pgd", epsilon=8.0, steps=PGD_STEPS)
    seconds = timed(lambda: pgd.generate(model, pixels, labels), max(1, repeats // PGD_STEPS))
    row["pgd_image_steps_s"] = infer_batch * PGD_STEPS / seconds

    compile_for_training(model, TrainConfig())
    x_train, y_train = pixels[:train_batch], onehot[:train_batch]
    if len(x_train) < train_batch:
        x_train = np.resize(pixels, (train_batch, size, size, 3))
        y_train = np.resize(onehot, (train_batch, CLASSES))
    row["train_img_s"] = train_batch / timed(
        lambda: model.train_on_batch(x_train, y_train), repeats
    )

    data = LabeledImages(
        name="bench",
        class_names=tuple(str(k) for k in range(CLASSES)),
        labels=np.argmax(y_train, axis=1),
        groups=np.arange(train_batch).astype(str),
        arrays=np.clip(x_train, 0, 255).astype(np.uint8),
    )
    dataset = make_dataset(data, PreprocessConfig(input_size=size), train_batch, True, seed=0)
    clock = _EpochClock()
    model.fit(
        dataset, epochs=2, steps_per_epoch=repeats, callbacks=[clock], shuffle=False, verbose=0
    )
    row["fit_img_s"] = repeats * train_batch / clock.seconds[-1]
    keras.mixed_precision.set_global_policy("float32")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchor", type=Path, default=DEFAULT_ANCHOR)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--small", action="store_true", help="64 px, batches of 4, 2 repeats")
    parser.add_argument("--policies", default=None, help="comma-separated dtype policies")
    args = parser.parse_args()

    size, infer_batch, train_batch, repeats = (64, 4, 4, 2) if args.small else (224, 256, 128, 20)
    policies = args.policies or ("float32" if args.small else "float32,mixed_bfloat16")
    anchor = json.loads(args.anchor.read_text()) if args.anchor.is_file() else {}
    backend = keras.backend.backend()
    result: dict[str, object] = {
        "devices": describe_devices(),
        "backend": backend,
        "keras": keras.__version__,
        "sizes": {"input": size, "infer_batch": infer_batch, "train_batch": train_batch},
        "repeats": repeats,
        "anchor": str(args.anchor) if anchor else None,
    }
    for policy in policies.split(","):
        for architecture in ("baseline", "attention"):
            tag = f"keras-{backend}/{policy}/{architecture}"
            row = measure(policy, architecture, size, infer_batch, train_batch, repeats)
            reference = anchor.get(f"keras-jax/{policy}/{architecture}")
            if isinstance(reference, dict) and not args.small:  # the anchor ran at full size
                row["ratio_vs_anchor"] = {
                    key: round(row[key] / reference[anchor_key], 3)
                    for key, anchor_key in (
                        ("infer_img_s", "infer_img_s"),
                        ("input_grad_img_s", "input_grad_img_s"),
                        ("pgd_image_steps_s", "input_grad_img_s"),
                        ("train_img_s", "train_img_s"),
                        ("fit_img_s", "train_img_s"),
                    )
                }
            result[tag] = row
            print(tag, json.dumps(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
