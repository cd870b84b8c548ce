"""Grad-CAM latency vs predict latency at batch 1, same model, one run (goal: ratio <= 2.2).

Both go through the compiled paths the product uses: ``gradients.logits`` for predict and
``GradCAM.explain`` (one forward pass to the tapped layer, forward + backward through the head,
and the map arithmetic) for the explanation. Medians over many calls after warm-up.

    .venv/bin/python bench/explain_latency.py --size 224 --calls 30
"""

from __future__ import annotations

import argparse
import json

import keras
import numpy as np
from interleaved import interleaved_medians

from training import gradients
from training.explain import GradCAM, GradCAMPlusPlus
from training.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()

    results = {"input_size": args.size, "backend": gradients.BACKEND, "batch": 1}
    for architecture in ("baseline", "attention"):
        keras.utils.set_random_seed(0)
        model = build_model(architecture, num_classes=7, input_size=args.size)
        image = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 3))
        image = image.astype(np.float32)
        seconds = interleaved_medians(
            {
                "predict": lambda m=model, x=image: gradients.logits(m, x),
                "gradcam": lambda m=model, x=image: GradCAM().explain(m, x),
                "gradcam++": lambda m=model, x=image: GradCAMPlusPlus().explain(m, x),
            },
            args.calls,
            warmups=2,
        )
        predict, cam, campp = (1000 * seconds[k] for k in ("predict", "gradcam", "gradcam++"))
        results[architecture] = {
            "predict_ms": round(predict, 2),
            "gradcam_ms": round(cam, 2),
            "gradcam_plus_plus_ms": round(campp, 2),
            "ratio_gradcam_vs_predict": round(cam / predict, 3),
            "ratio_gradcam_plus_plus_vs_predict": round(campp / predict, 3),
        }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
