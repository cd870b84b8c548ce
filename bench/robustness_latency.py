"""Cost of trust at serve time, one run on this machine (numbers are noisy on a shared CPU).

1. ``certify`` (n0 + n noisy images) vs the same number of raw forward passes of the same model
   through the same batch loop (``gradients.logits`` on a preallocated batch): the ratio
   raw / certify says what the Monte-Carlo loop (noise draws, counting, deadline checks) adds
   (goal ≥ 0.9). The ResNet-50 baseline at 64 px (random weights: timing only). Rounds are
   interleaved so load from other processes falls on both alike; medians reported.
2. ``smallest_flip`` cost per answer in model calls (gradient + forward evaluations), median
   and p95 over real HAM10000 test images, for APGD-CE and PGD (L∞) and PGD-L2, on a small CNN
   trained here for a few seconds on real HAM10000 pixels at 64 px (ResNet-50 batch-1 gradient
   calls would take tens of minutes on two cores); also the median upper bound each attack
   reaches, to compare strength at a cost.

    MEDROBUST_DATA_DIR=../shared/data .venv/bin/python bench/robustness_latency.py --images 50
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import keras
import numpy as np
from interleaved import interleaved_medians

from training import gradients
from training.data import load_ham10000
from training.models import build_model
from training.preprocess import read_image
from training.trust import FlipSpec, SmoothingSpec, certify, smallest_flip

SIZE = 64


def _raw_forwards(model: keras.Model, x: np.ndarray, total: int, batch_size: int) -> None:
    batch = np.repeat(x[None], batch_size, axis=0)
    remaining = total
    while remaining > 0:
        size = min(batch_size, remaining)
        np.argmax(gradients.logits(model, batch[:size]), axis=1)
        remaining -= size


def certify_ratio(n: int, n0: int, batch_size: int, rounds: int) -> dict:
    keras.utils.set_random_seed(0)
    model = build_model("baseline", num_classes=7, input_size=SIZE)
    x = np.random.default_rng(0).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    spec = SmoothingSpec(sigma=64.0, n0=n0, n=n, batch_size=batch_size)
    calls = {
        "certify": lambda: certify(model, x, spec),
        "raw": lambda: _raw_forwards(model, x, n0 + n, batch_size),
    }
    median = interleaved_medians(calls, rounds)  # the warm-up compiles both batch shapes
    return {
        "model": f"resnet50 baseline {SIZE}px",
        "n0": n0,
        "n": n,
        "batch_size": batch_size,
        "rounds": rounds,
        "certify_s": round(median["certify"], 3),
        "raw_forwards_s": round(median["raw"], 3),
        "ratio_raw_over_certify": round(median["raw"] / median["certify"], 3),
    }


def _ham(data_dir: Path, images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ham = load_ham10000(data_dir / "ham10000_200x150")
    rng = np.random.default_rng(0)

    def load(split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
        """Class-balanced, as in tests/trust: on HAM10000's 67 % "nv" a few-second CNN would
        otherwise learn a constant answer that no perturbation flips."""
        pool = np.concatenate([
            rng.choice(found, min(per_class, len(found)), replace=False)
            for k in range(7)
            if len(found := np.flatnonzero((ham.labels == k) & (ham.source_split == split)))
        ])  # fmt: skip
        pixels = [
            cv2.resize(read_image(ham.paths[i]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            for i in pool
        ]
        return np.stack(pixels).astype(np.float32), ham.labels[pool]

    x_test, y_test = load("test", -(-images // 7))
    return (*load("train", 60), x_test[:images], y_test[:images])


def _small_cnn(x: np.ndarray, y: np.ndarray) -> keras.Model:
    keras.utils.set_random_seed(0)
    pixels = keras.Input((SIZE, SIZE, 3))
    hidden = keras.layers.Rescaling(1 / 255.0)(pixels)
    for width in (16, 32):
        hidden = keras.layers.Conv2D(width, 3, activation="relu")(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(pixels, keras.layers.Dense(7)(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=40, verbose=0)
    return model


def flip_costs(data_dir: Path, images: int, steps: int) -> dict:
    x_train, y_train, x_test, _ = _ham(data_dir, images)
    model = _small_cnn(x_train, y_train)
    results = {}
    for norm, attack in (("inf", "apgd_ce"), ("inf", "pgd"), ("2", "pgd_l2")):
        spec = FlipSpec(norm=norm, attack=attack, steps=steps)
        start = time.perf_counter()
        reports = [smallest_flip(model, image, spec).report for image in x_test]
        calls = np.array([r.model_calls for r in reports])
        uppers = [r.upper for r in reports if r.upper is not None]
        results[attack] = {
            "norm": norm,
            "steps": steps,
            "images": len(reports),
            "calls_median": float(np.median(calls)),
            "calls_p95": float(np.percentile(calls, 95)),
            "flipped": len(uppers),
            "upper_median": float(np.median(uppers)) if uppers else None,
            "seconds_per_answer": round((time.perf_counter() - start) / len(reports), 3),
        }
    return {"model": f"small CNN {SIZE}px on HAM10000", **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("MEDROBUST_DATA_DIR", "../shared/data"))
    print(json.dumps(certify_ratio(args.n, args.n0, args.batch_size, args.rounds), indent=2))
    print(json.dumps(flip_costs(data_dir, args.images, args.steps), indent=2))


if __name__ == "__main__":
    main()
