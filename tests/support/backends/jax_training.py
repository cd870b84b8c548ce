"""A short training run on the JAX backend through the normal entry points, run by the test in a
process where TensorFlow cannot be imported.

It writes a tiny image-folder dataset, trains with :func:`training.workflow.train_and_store`
with PGD adversarial training (its attacks in train mode: stateless batch statistics under
``jax.jit``), crashing once in epoch 2 and resuming from the checkpoint, loads the stored model back
(sha256-verified), and attacks it with ``medrobust evaluate`` (FGSM and PGD, Grad-CAM compared).
It prints one JSON line of facts for the test to check.

``python jax_training.py WORKDIR``
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import keras
import numpy as np

from training.cli import app
from training.config import TrainConfig, TrainingSpec
from training.data.registry import DatasetSpec, load_dataset, splits_for
from training.devices import describe_devices
from training.fit import LAST_CHECKPOINT, ProgressEvent
from training.preprocess import PreprocessConfig
from training.store import ModelStore
from training.workflow import train_and_store


def write_images(root: Path) -> None:
    """Dark and bright noisy 40×40 PNGs, 15 per class."""
    rng = np.random.default_rng(11)
    for label, level in (("dark", 70), ("bright", 170)):
        (root / label).mkdir(parents=True)
        for i in range(15):
            image = np.clip(level + rng.normal(0, 25, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / label / f"{label}{i}.png"), image)


def main(workdir: Path) -> None:
    write_images(workdir / "images")
    spec = TrainingSpec(
        name="jax-tiny",
        dataset=DatasetSpec(kind="folders", path=str(workdir / "images")),
        preprocess=PreprocessConfig(input_size=32),
        train=TrainConfig(
            epochs=2,
            batch_size=8,
            learning_rate=1e-3,
            warmup_epochs=1,
            adversarial={"method": "pgd", "epsilon": 4.0, "steps": 2},
        ),
    )
    store = ModelStore(workdir / "store")
    checkpoints = workdir / "checkpoints"

    def crash_in_epoch_two(event: ProgressEvent) -> None:
        if event.stage == "batch" and event.epoch == 2:
            raise RuntimeError("worker died")

    crashed = False
    try:
        train_and_store(spec, store, checkpoints, listener=crash_in_epoch_two)
    except RuntimeError as error:
        crashed = str(error) == "worker died"
    epochs_after_resume: list[int] = []
    manifest = train_and_store(
        spec,
        store,
        checkpoints,
        listener=lambda e: epochs_after_resume.append(e.epoch) if e.stage == "epoch" else None,
    )
    loaded = store.load("jax-tiny", "latest")
    report_path = workdir / "report.json"
    app(
        [
            "evaluate",
            "--models",
            "jax-tiny",
            "--dataset",
            "folders",
            "--data",
            str(workdir / "images"),
            "--out",
            str(report_path),
            "--attacks",
            "fgsm,pgd",
            "--eps",
            "4",
            "--steps",
            "2",
            "--explain",
            "gradcam",
            "--store",
            str(workdir / "store"),
        ],
        standalone_mode=False,
    )
    report = json.loads(report_path.read_text())
    checkpoint = keras.saving.load_model(checkpoints / LAST_CHECKPOINT, safe_mode=True)
    data = load_dataset(spec.dataset)
    facts = {
        "devices": describe_devices(),
        "crashed": crashed,
        "epochs_after_resume": epochs_after_resume,
        "epochs_run": manifest.epochs_run,
        "history_epochs": len(manifest.history["val_loss"]),
        "checkpoint_optimizer_iterations": int(np.asarray(checkpoint.optimizer.iterations.value)),
        "steps_per_epoch": math.ceil(len(splits_for(spec.dataset, data)["train"]) / 8),
        "loaded_name": loaded.manifest.name,
        "defense": (manifest.training_spec or {})["train"]["adversarial"],
        "weights_sha256": manifest.weights_sha256,
        "report_models": [m["weights_sha256"] for m in report["models"]],
        "report_cells": [(c["attack"], c["epsilon"], c["n"]) for c in report["results"]],
        "report_map_comparisons": sum(c["map_comparison"] is not None for c in report["results"]),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    print(json.dumps(facts))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
