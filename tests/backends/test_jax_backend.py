"""The Keras JAX backend (the GPU machines' only backend) against TensorFlow, on the CPU.

This process builds tiny models and saves them as ``.keras``; two fresh processes load them, one
on TensorFlow and one on JAX with TensorFlow made unimportable (``backend_subprocess.py``), and
compute the same logits, input gradients, FGSM/PGD images, Grad-CAM/Grad-CAM++ maps and
attention maps (``backend_probe.py``). The two must agree to float32 tolerance.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from backend_probe import MODEL_NAMES
from backend_subprocess import BackendProcess

from training.models import build_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(name) for name in ("jax", "tensorflow")),
        reason="compares the JAX and TensorFlow backends: needs both installed",
    ),
]

HERE = Path(__file__).parent
SIZE = 64  # 2×2 feature maps: the smallest size where maps and attention softmaxes mean anything


def _models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(3)
    common = {"num_classes": 3, "input_size": SIZE, "weights": None}
    return {
        "baseline": build_model("baseline", **common),
        "attention-paper": build_model("attention", attention_variant="paper", **common),
        "attention-datta-reference": build_model(
            "attention", attention_variant="datta-reference", **common
        ),
    }


@pytest.fixture(scope="module")
def children(tmp_path_factory) -> tuple[Path, dict[str, BackendProcess]]:
    """Save the models and inputs, then start all three child processes at once."""
    directory = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(5)
    pixels = rng.uniform(0, 255, size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.savez(directory / "inputs.npz", pixels=pixels, labels=np.array([0, 2]))
    for name, model in _models().items():
        model.save(directory / f"{name}.keras")
    probe_args = (str(directory), str(directory / "inputs.npz"))
    (directory / "training").mkdir()
    processes = {
        backend: BackendProcess(
            backend, HERE / "backend_probe.py", *probe_args, str(directory / f"{backend}.npz")
        )
        for backend in ("tensorflow", "jax")
    }
    processes["training"] = BackendProcess(
        "jax", HERE / "jax_training.py", str(directory / "training")
    )
    yield directory, processes
    for process in processes.values():
        process.process.kill()
        process.process.communicate()


@pytest.fixture(scope="module")
def both_backends(children) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(TensorFlow results, JAX results), keyed ``"<model>/<output>"``."""
    directory, processes = children
    results = []
    for backend in ("tensorflow", "jax"):
        processes[backend].wait()
        with np.load(directory / f"{backend}.npz") as saved:
            results.append(dict(saved))
    return results[0], results[1]


@pytest.fixture(scope="module")
def jax_training(children) -> dict:
    """The facts ``jax_training.py`` printed."""
    return json.loads(children[1]["training"].wait().strip().splitlines()[-1])


def test_each_side_ran_on_its_backend_and_jax_without_tensorflow(both_backends):
    tf_results, jax_results = both_backends
    assert str(tf_results["backend"]) == "tensorflow"
    assert str(jax_results["backend"]) == "jax"
    assert not bool(jax_results["tensorflow_imported"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_and_input_gradients_agree(both_backends, name):
    tf_results, jax_results = both_backends
    logits = tf_results[f"{name}/logits"]
    scale = np.abs(logits).max()
    np.testing.assert_allclose(jax_results[f"{name}/logits"], logits, rtol=1e-4, atol=1e-4 * scale)
    gradient = tf_results[f"{name}/input_gradient"]
    error = np.linalg.norm(jax_results[f"{name}/input_gradient"] - gradient)
    assert error <= 1e-5 * np.linalg.norm(gradient)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_adversarial_images_agree(both_backends, name, attack):
    tf_images, jax_images = (
        both_backends[0][f"{name}/{attack}"],
        both_backends[1][f"{name}/{attack}"],
    )
    # sign(gradient) may flip where a gradient entry is ~0 within float error: allow a few pixels
    differs = ~np.isclose(jax_images, tf_images, atol=1e-3)
    assert differs.mean() < 1e-3, f"{differs.mean():.2%} of pixel values differ"
    assert np.abs(jax_images - tf_images).max() <= 2 * 2.0 + 1e-3  # never beyond the ε-balls


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_maps_agree_for_chosen_and_predicted_classes(both_backends, name, method):
    tf_results, jax_results = both_backends
    np.testing.assert_array_equal(
        jax_results[f"{name}/{method}_predicted_classes"],
        tf_results[f"{name}/{method}_predicted_classes"],
    )
    # Grad-CAM++ divides by 2g² + ΣA·g³, which nears 0 for some channels and magnifies the
    # backends' float32 rounding differences (~1e-7) into the 1e-3 range.
    tolerance = 1e-4 if method == "gradcam" else 1e-2
    for which in ("predicted", "label"):
        key = f"{name}/{method}_{which}"
        np.testing.assert_allclose(jax_results[key], tf_results[key], atol=tolerance)


@pytest.mark.parametrize("name", ["attention-paper", "attention-datta-reference"])
def test_attention_maps_agree(both_backends, name):
    tf_results, jax_results = both_backends
    key = f"{name}/attention_maps"
    np.testing.assert_allclose(jax_results[key], tf_results[key], rtol=1e-4, atol=1e-6)


def test_a_jax_training_run_resumes_stores_and_evaluates_without_tensorflow(jax_training):
    facts = jax_training
    assert facts["devices"].startswith("JAX ")
    assert not facts["tensorflow_imported"]
    assert facts["crashed"] and facts["epochs_after_resume"] == [2]  # epoch 1 was not redone
    assert facts["epochs_run"] == 2 and facts["history_epochs"] == 2
    # the optimizer state survived the crash: both epochs' steps are counted
    assert facts["checkpoint_optimizer_iterations"] == 2 * facts["steps_per_epoch"]
    assert facts["loaded_name"] == "jax-tiny"
    assert facts["report_models"] == [facts["weights_sha256"]]
    assert [cell[:2] for cell in facts["report_cells"]] == [["fgsm", 4.0], ["pgd", 4.0]]
    assert facts["report_map_comparisons"] == 2
