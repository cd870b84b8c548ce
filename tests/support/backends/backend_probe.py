"""What the cross-backend test computes, identically on whichever Keras backend imports it.

The parent test (TensorFlow) imports :func:`probe` directly; the JAX side runs this file as a
script in a fresh process (the backend is fixed at import), loading the models the TensorFlow
side saved and writing its results to an ``.npz`` for the parent to compare.

``python backend_probe.py MODELS_DIR INPUTS.npz OUT.npz``
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np

from training import gradients
from training.attacks import make_attack
from training.explain.attention import attention_maps, has_attention
from training.explain.cam import get_method

MODEL_NAMES = ("baseline", "attention-paper", "attention-datta-reference")


def probe(model: keras.Model, pixels: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every gradient-dependent output for one model: logits, input gradients, FGSM, PGD and
    APGD-CE images and the logits there (each APGD iteration, step-size bookkeeping included, is
    one compiled call on the backend), Grad-CAM and Grad-CAM++ maps (explicit and predicted
    classes), attention maps."""
    onehot = np.eye(int(model.output.shape[-1]), dtype=np.float32)[labels]
    input_gradient, _ = gradients.loss_input_gradient(model, pixels, onehot)
    out = {
        "logits": gradients.logits(model, pixels),
        # as adversarial training attacks it: batch statistics (and dropout), stateless
        "train_mode_logits": gradients.logits(model, pixels, training=True),
        "input_gradient": input_gradient,
        "fgsm": make_attack("fgsm", epsilon=2.0).generate(model, pixels, labels),
        # random start: per-sample numpy seeds, the same on both backends
        "pgd": make_attack("pgd", epsilon=2.0, steps=2).generate(model, pixels, labels),
        # 5 steps: checkpoints at iterations 2 and 3, so a step-size halving can happen
        "apgd_ce": make_attack("apgd_ce", epsilon=2.0, steps=5).generate(model, pixels, labels),
    }
    for attack in ("fgsm", "pgd", "apgd_ce"):
        out[f"{attack}_logits"] = gradients.logits(model, out[attack])
    for method in ("gradcam", "gradcam++"):
        predicted = get_method(method)(model, pixels)
        out[f"{method}_predicted"] = predicted.maps
        out[f"{method}_predicted_classes"] = predicted.class_indices
        out[f"{method}_label"] = get_method(method)(model, pixels, labels).maps
    if has_attention(model):
        out["attention_maps"] = attention_maps(model, pixels)
    return out


def main(models_dir: Path, inputs: Path, destination: Path) -> None:
    data = np.load(inputs)
    results = {}
    for name in MODEL_NAMES:
        model = keras.saving.load_model(models_dir / f"{name}.keras", safe_mode=True)
        for key, value in probe(model, data["pixels"], data["labels"]).items():
            results[f"{name}/{key}"] = value
    results["backend"] = np.array(keras.backend.backend())
    results["tensorflow_imported"] = np.array("tensorflow" in sys.modules)
    np.savez(destination, **results)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
