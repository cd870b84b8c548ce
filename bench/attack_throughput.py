"""PGD image-steps/s through ``robustness.evaluate`` vs raw input-gradient images/s, one run.

The raw figure is the model's own ceiling: back-to-back input-gradient calls on one batch. The
evaluation figure counts only PGD steps as work but times everything ``evaluate`` does around them
(clean pass, random starts, projection, final prediction, bookkeeping). Ratio goal: >= 0.9.

    .venv/bin/python bench/attack_throughput.py --size 64 --images 64 --steps 10
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

from training import gradients
from training.models import build_model
from training.robustness import AttackSpec, EvaluationSpec, ModelIdentity, evaluate


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

    batch = pixels[: args.batch_size]
    gradients.loss_input_gradient(model, batch, onehot[: args.batch_size])  # compile
    calls = args.repeats * args.steps * (args.images // args.batch_size)
    start = time.perf_counter()
    for _ in range(calls):
        gradients.loss_input_gradient(model, batch, onehot[: args.batch_size])
    raw = calls * args.batch_size / (time.perf_counter() - start)

    identity = ModelIdentity(name="bench", version=1, weights_sha256="-", architecture="x")
    spec = EvaluationSpec(
        attacks=[AttackSpec(name="pgd", params={"steps": args.steps})],
        epsilons=[8],
        batch_size=args.batch_size,
    )
    evaluate(
        [(identity, model)],
        pixels[: args.batch_size],
        labels[: args.batch_size],
        [str(k) for k in range(7)],
        spec,
        "bench",
    )  # compile the same shapes
    start = time.perf_counter()
    for _ in range(args.repeats):
        evaluate([(identity, model)], pixels, labels, [str(k) for k in range(7)], spec, "bench")
    through_evaluate = args.repeats * args.images * args.steps / (time.perf_counter() - start)

    print(
        json.dumps(
            {
                "architecture": args.architecture,
                "input_size": args.size,
                "images": args.images,
                "batch_size": args.batch_size,
                "pgd_steps": args.steps,
                "backend": gradients.BACKEND,
                "raw_input_gradient_img_s": round(raw, 1),
                "evaluate_pgd_image_steps_s": round(through_evaluate, 1),
                "ratio": round(through_evaluate / raw, 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
