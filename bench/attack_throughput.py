"""PGD and APGD-CE image-steps/s through ``robustness.evaluate`` vs raw input-gradient images/s.

The raw figure is the model's own ceiling: back-to-back input-gradient calls on one batch. The
evaluation figures count only attack steps as work but time everything ``evaluate`` does around
them (clean pass, random starts, projection, APGD's step-size bookkeeping and final forward pass,
final prediction). Ratio goal: >= 0.9 for each attack. One run.

    .venv/bin/python bench/attack_throughput.py --size 64 --images 64 --steps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np

from training import gradients
from training.model_ref import ModelIdentity
from training.models import build_model
from training.robustness.run import evaluate
from training.robustness.spec import AttackSpec, EvaluationSpec

ATTACKS = ("pgd", "apgd_ce")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="attention")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = build_model(args.architecture, num_classes=7, input_size=args.size)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (args.images, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, 7, args.images)
    onehot = np.eye(7, dtype=np.float32)[labels]

    batch, batch_onehot = pixels[: args.batch_size], onehot[: args.batch_size]
    identity = ModelIdentity(name="bench", version=1, weights_sha256="-", architecture="x")
    specs = {
        name: EvaluationSpec(
            attacks=[AttackSpec(name=name, params={"steps": args.steps})],
            epsilons=[8],
            batch_size=args.batch_size,
        )
        for name in ATTACKS
    }
    classes = [str(k) for k in range(7)]
    gradients.loss_input_gradient(model, batch, batch_onehot)  # compile every path
    for spec in specs.values():
        evaluate([(identity, model)], batch, labels[: args.batch_size], classes, spec, "bench")

    # Rounds alternate the measurements so load from other processes hits all alike.
    calls = args.steps * (args.images // args.batch_size)
    raw_rates: list[float] = []
    evaluate_rates: dict[str, list[float]] = {name: [] for name in ATTACKS}
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(calls):
            gradients.loss_input_gradient(model, batch, batch_onehot)
        raw_rates.append(calls * args.batch_size / (time.perf_counter() - start))
        for name, spec in specs.items():
            start = time.perf_counter()
            evaluate([(identity, model)], pixels, labels, classes, spec, "bench")
            evaluate_rates[name].append(args.images * args.steps / (time.perf_counter() - start))
    result: dict[str, object] = {
        "architecture": args.architecture,
        "input_size": args.size,
        "images": args.images,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "backend": gradients.BACKEND,
        "raw_input_gradient_img_s": round(statistics.median(raw_rates), 1),
    }
    for name, rates in evaluate_rates.items():
        ratios = [e / r for e, r in zip(rates, raw_rates, strict=True)]
        result[f"evaluate_{name}_image_steps_s"] = round(statistics.median(rates), 1)
        result[f"{name}_ratio"] = round(statistics.median(ratios), 3)
        result[f"{name}_ratio_per_round"] = [round(r, 3) for r in ratios]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
