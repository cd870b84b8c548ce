"""The Keras JAX backend (the GPU machines' only backend) against TensorFlow, on the CPU.

This process builds tiny models and saves them as ``.keras``; two fresh processes load them, one
on TensorFlow and one on JAX with TensorFlow made unimportable (``backend_subprocess`` in
``tests/support/backends/``), and compute the same logits, input gradients, FGSM/PGD images,
Grad-CAM/Grad-CAM++ maps and attention maps (``backend_probe``). TensorFlow runs twice, with
oneDNN's kernels and without, each compared with JAX.

They must agree to float32 tolerance, which is not one number: where a softmax saturates, an
input gradient is ill-conditioned and two correct float32 implementations differ by far more
than elsewhere (see :func:`gradient_tolerances`); which CPU path (oneDNN with AMX or AVX-512,
Eigen, XLA) lands where is not something a test may depend on.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.support.backends.backend_probe import MODEL_NAMES
from tests.support.backends.backend_subprocess import BackendProcess
from tests.support.scratch import scratch_dir
from training.models import build_model

pytestmark = [
    pytest.mark.slow,
    # A hang guard, not a timing check: the first test waits for the four children (below),
    # which share two cores; on an AVX2-only CPU they take several times as long as with AVX-512.
    pytest.mark.timeout(3 * 900),
    pytest.mark.skipif(
        not all(importlib.util.find_spec(name) for name in ("jax", "tensorflow")),
        reason="compares the JAX and TensorFlow backends: needs both installed",
    ),
]

SCRIPTS = Path(__file__).resolve().parents[1] / "support" / "backends"
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


# TensorFlow runs both with oneDNN's kernels and with plain TensorFlow's; a run's name says which.
TF_RUNS = {"tensorflow-onednn-on": "1", "tensorflow-onednn-off": "0"}

UNIT_ROUNDOFF = 2.0**-24  # float32, round to nearest
# Relative L2 error of a float32 ResNet-50 input gradient where nothing amplifies rounding: the
# backward pass is D ≈ 2 × 53 layers of dot products of length n ≤ 3·3·512; rounding errors of
# one dot product are ≲ √n·u (probabilistic bound, Higham & Mary 2019) and independent layers add
# in quadrature: √D·√n·u ≈ 10 · 68 · 6e-8 ≈ 4e-5 per implementation, ≈ 6e-5 between two.
# Measured between the backends on well-conditioned inputs: 1e-6 to 3e-6.
SMOOTH_GRADIENT_TOLERANCE = 1e-4
# Train-mode logits agree far less closely than inference logits: with the probe's batch of two,
# each batch norm divides by a standard deviation computed from 2 x H x W values of nearly alike
# untrained features, which amplifies rounding (cancellation in x - mean). Measured between
# backends (baseline, 64 px): inference 6e-7 of the logit scale, train mode 1.3e-4 (AMD Zen 3,
# TensorFlow without oneDNN vs JAX), about 200x more, and which pair is worst depends on the CPU.
# The bound is set by what the check must catch, not by one run: a wrong mode moves the logits by
# the train/inference gap (about 10x their scale here) and wrong statistics axes by O(scale), so
# 1 % of the scale rejects both by orders of magnitude and leaves rounding 75x headroom.
TRAIN_MODE_TOLERANCE = 1e-2
# A hang guard, not a timing check: four children share the cores, which other work may load.
CHILD_TIMEOUT_S = 2 * 900


@pytest.fixture(scope="module")
def children(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, BackendProcess]]]:
    """Save the models and inputs, then start all child processes at once."""
    with scratch_dir(request, tmp_path_factory, "backends") as directory:
        rng = np.random.default_rng(5)
        pixels = rng.uniform(0, 255, size=(2, SIZE, SIZE, 3)).astype(np.float32)
        np.savez(directory / "inputs.npz", pixels=pixels, labels=np.array([0, 2]))
        for name, model in _models().items():
            model.save(directory / f"{name}.keras")
        probe_args = (str(directory), str(directory / "inputs.npz"))
        (directory / "training").mkdir()
        processes = {
            run: BackendProcess(
                "tensorflow",
                SCRIPTS / "backend_probe.py",
                *probe_args,
                str(directory / f"{run}.npz"),
                environment={"TF_ENABLE_ONEDNN_OPTS": onednn},
            )
            for run, onednn in TF_RUNS.items()
        }
        processes["jax"] = BackendProcess(
            "jax", SCRIPTS / "backend_probe.py", *probe_args, str(directory / "jax.npz")
        )
        processes["training"] = BackendProcess(
            "jax", SCRIPTS / "jax_training.py", str(directory / "training")
        )
        yield directory, processes
        for process in processes.values():
            process.process.kill()
            process.process.communicate()


@pytest.fixture(scope="module")
def runs(children) -> dict[str, dict[str, np.ndarray]]:
    """Each probe run's results keyed ``"<model>/<output>"``, and ``"inputs"``."""
    directory, processes = children
    results = {}
    for run in (*TF_RUNS, "jax"):
        processes[run].wait(timeout=CHILD_TIMEOUT_S)
        with np.load(directory / f"{run}.npz") as saved:
            results[run] = dict(saved)
    with np.load(directory / "inputs.npz") as saved:
        results["inputs"] = dict(saved)
    return results


@pytest.fixture(scope="module", params=list(TF_RUNS))
def both_backends(request, runs) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(TensorFlow results, JAX results) for one TensorFlow run (oneDNN on, then off)."""
    return runs[request.param], runs["jax"]


@pytest.fixture(scope="module")
def jax_training(children) -> dict:
    """The facts ``jax_training.py`` printed."""
    facts = children[1]["training"].wait(timeout=CHILD_TIMEOUT_S)
    return json.loads(facts.strip().splitlines()[-1])


def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example CE in float64 (the float32 logits' own rounding is far below the changes that
    the tests compare)."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=1)
    log_sum = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return log_sum - logits[np.arange(len(labels)), labels]


def gradient_tolerances(
    results: dict[str, np.ndarray], name: str, labels: np.ndarray
) -> np.ndarray:
    """Per-example bound on the relative L2 difference of two float32 input gradients.

    Rounding is amplified where a softmax saturates. The backward pass of ``s = softmax(z)``
    forms ``s_j − s_j·Σ s`` and, for cross-entropy, ``s_y − 1``; with the largest entry
    ``s_max`` rounded to float32 (absolute error ≤ u), a difference of size ``1 − s_max`` carries
    a relative error up to ``u / (1 − s_max)``, and it scales every input-gradient path through
    that softmax. So each example's bound is ``τ + 4u·Σ κ``: ``κ = 1 / (1 − s_y)`` for the output
    softmax (large only when the label is the prediction, with ``s_y`` ≈ 1) and
    ``κ = 1 / (1 − max A)`` for each attention head's softmax over positions; the factor 4 is 2
    for the rounding of the sum next to the one of ``s_max`` and 2 for two implementations.
    Here the untrained models' heads saturate (1 − max A ≈ 4e-6 for attention-paper's second
    image) and baseline's second image has ``1 − s_y`` ≈ 3e-7: there TensorFlow with and without
    oneDNN, and JAX, land up to 3e-4 and 2e-3 apart (which pair differs depends on the CPU:
    Intel AMX, AMD Zen 5), while datta-reference's and baseline's first image agree to 2e-6.
    The bound is capped at 0.5: a real bug (a negated gradient, a skipped preprocessing step,
    another loss) is off by ≳ 1, so it fails wherever the bound is small, and each model has an
    example where it is ≤ 0.1.
    """
    probabilities = _softmax(results[f"{name}/logits"].astype(np.float64))
    label_probability = probabilities[np.arange(len(labels)), labels]
    conditioning = 1.0 / np.maximum(1.0 - label_probability, UNIT_ROUNDOFF)
    maps = results.get(f"{name}/attention_maps")
    if maps is not None:
        flat = maps.astype(np.float64).reshape(len(labels), -1, maps.shape[-1])
        conditioning += (1.0 / np.maximum(1.0 - flat.max(axis=1), UNIT_ROUNDOFF)).sum(axis=1)
    return np.minimum(SMOOTH_GRADIENT_TOLERANCE + 4 * UNIT_ROUNDOFF * conditioning, 0.5)


def _relative_errors(gradient: np.ndarray, reference: np.ndarray) -> np.ndarray:
    difference = (gradient - reference).reshape(len(reference), -1)
    return np.linalg.norm(difference, axis=1) / np.linalg.norm(
        reference.reshape(len(reference), -1), axis=1
    )


def test_each_side_ran_on_its_backend_and_jax_without_tensorflow(runs):
    assert all(str(runs[run]["backend"]) == "tensorflow" for run in TF_RUNS)
    assert str(runs["jax"]["backend"]) == "jax"
    assert not bool(runs["jax"]["tensorflow_imported"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_and_input_gradients_agree(both_backends, runs, name):
    tf_results, jax_results = both_backends
    logits = tf_results[f"{name}/logits"]
    scale = np.abs(logits).max()
    np.testing.assert_allclose(jax_results[f"{name}/logits"], logits, rtol=1e-4, atol=1e-4 * scale)
    labels = runs["inputs"]["labels"]
    tolerance = gradient_tolerances(jax_results, name, labels)
    assert tolerance.min() <= 0.1, "no example where a wrong gradient would show"
    errors = _relative_errors(
        jax_results[f"{name}/input_gradient"], tf_results[f"{name}/input_gradient"]
    )
    assert np.all(errors <= tolerance), f"relative errors {errors} above {tolerance}"


def test_train_mode_logits_use_batch_statistics_on_both_backends(both_backends, runs):
    """Adversarial training's attacks run the network in train mode. The baseline has no dropout
    (whose masks each backend draws from its own generator), so there the backends must agree as
    for inference; on every model train mode must differ from inference (batch statistics)."""
    tf_results, jax_results = both_backends
    key = "baseline/train_mode_logits"
    bound = TRAIN_MODE_TOLERANCE * np.abs(tf_results[key]).max()
    # the bugs this catches (moving instead of batch statistics, statistics over other axes)
    # move the logits by the whole train/inference gap or O(scale): far above the bound
    gap = np.abs(tf_results[key] - tf_results["baseline/logits"]).max()
    assert gap > 10 * bound, f"train/inference gap {gap} too small to tell a wrong mode apart"
    np.testing.assert_allclose(jax_results[key], tf_results[key], rtol=0, atol=bound)
    for run in (*TF_RUNS, "jax"):
        results = runs[run]
        for name in MODEL_NAMES:
            train_mode, inference = results[f"{name}/train_mode_logits"], results[f"{name}/logits"]
            assert np.abs(train_mode - inference).max() > 0.1 * np.abs(inference).max(), name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fgsm_steps_along_each_backends_own_gradient_sign(both_backends, runs, name):
    """FGSM is ``clip(x + ε·sign(g))``: on each backend exactly so with its own gradient, so
    the images differ only where the two gradients' signs do (components whose size is below
    the backends' gradient difference, which the gradient test bounds)."""
    pixels = runs["inputs"]["pixels"]
    signs = []
    for results in both_backends:
        gradient = results[f"{name}/input_gradient"]
        expected = np.clip(pixels + 2.0 * np.sign(gradient), 0.0, 255.0)
        np.testing.assert_array_equal(results[f"{name}/fgsm"], expected)
        signs.append(np.sign(gradient))
    tf_images, jax_images = (results[f"{name}/fgsm"] for results in both_backends)
    differs = tf_images != jax_images
    assert not np.any(differs & (signs[0] == signs[1]))


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_adversarial_images_raise_the_loss_within_the_ball(both_backends, runs, name, attack):
    """What an attack must do, on each backend: stay in the ε-ball and the pixel range and raise
    every example's loss. Pixel-exact agreement between backends is not required: a sign flips
    where a gradient component is within the backends' (bounded) difference, and PGD's second
    step then starts from a slightly different point."""
    pixels, labels = runs["inputs"]["pixels"], runs["inputs"]["labels"]
    for results in both_backends:
        images = results[f"{name}/{attack}"]
        assert np.abs(images - pixels).max() <= 2.0 + 1e-4
        assert images.min() >= 0.0 and images.max() <= 255.0
        clean = _cross_entropy(results[f"{name}/logits"], labels)
        attacked = _cross_entropy(results[f"{name}/{attack}_logits"], labels)
        assert np.all(attacked > clean), f"{attack} lowered the loss: {clean} -> {attacked}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_apgd_runs_its_compiled_loop_on_each_backend(both_backends, runs, name):
    """APGD-CE on each backend stays in the ε-ball and the pixel range, and for every example
    either fools the model or ends with a cross-entropy above the clean one. (APGD returns the
    first fooling iterate, which may have a lower loss than the clean image when the clean image
    is already misclassified, so "loss raised" alone is not its contract.)"""
    pixels, labels = runs["inputs"]["pixels"], runs["inputs"]["labels"]
    for results in both_backends:
        images = results[f"{name}/apgd_ce"]
        assert np.abs(images - pixels).max() <= 2.0 + 1e-4
        assert images.min() >= 0.0 and images.max() <= 255.0
        attacked_logits = results[f"{name}/apgd_ce_logits"]
        fooled = attacked_logits.argmax(axis=1) != labels
        clean = _cross_entropy(results[f"{name}/logits"], labels)
        attacked = _cross_entropy(attacked_logits, labels)
        assert np.all(fooled | (attacked > clean)), (fooled, clean, attacked)


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
    assert facts["defense"]["method"] == "pgd" and facts["defense"]["attack_mode"] == "train"
    assert facts["report_models"] == [facts["weights_sha256"]]
    assert [cell[:2] for cell in facts["report_cells"]] == [["fgsm", 4.0], ["pgd", 4.0]]
    assert facts["report_map_comparisons"] == 2
