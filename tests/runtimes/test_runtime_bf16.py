"""``openvino-bf16`` (training/runtimes/openvino_bf16.py): the margin guard's argument, and the
runtime on the tiny CNN trained on real HAM10000 images.

Which path the runtime takes depends on the CPU: with bf16 units (AVX-512 BF16, AMX) it serves
bf16 behind its guard and the gate; without them it serves ``openvino`` (f32). The test of the
machine's own path runs everywhere, and the other path is forced by replacing the capability
probe (the one stand-in here: a CPU's instruction set cannot be switched in a test).
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest

from service.config import Settings
from tests.support.runtime_models import model_dir
from training.runtimes import (
    KERAS,
    OPENVINO,
    OPENVINO_BF16,
    RUNTIMES,
    keras_fp32,
    openvino_bf16,
    read_record,
    runtime_dir,
    serving_forward,
)
from training.runtimes.openvino_bf16 import GuardedBf16Forward, bf16_units, top_gap
from training.runtimes.openvino_ir import artefact_sha256


def _worst_case_error(reference: np.ndarray, error: float) -> np.ndarray:
    """``reference`` moved by ``error`` per class in the direction that flips top-1 soonest:
    the top class down, the runner-up up (the adversary the guard's argument allows)."""
    moved = reference.copy()
    order = np.argsort(reference, axis=1)
    rows = np.arange(len(reference))
    moved[rows, order[:, -1]] -= error
    moved[rows, order[:, -2]] += error
    return moved


def test_a_guard_of_twice_the_error_keeps_every_top1_class_and_half_of_it_does_not(tiny_ham):
    reference = keras_fp32(tiny_ham.model)(tiny_ham.x_test)
    gaps = top_gap(reference)
    error = float(np.quantile(gaps, 0.3)) / 2  # so that about 30 % of images can flip
    exact = keras_fp32(tiny_ham.model)

    def bf16(pixels: np.ndarray) -> np.ndarray:
        return _worst_case_error(exact(pixels), error)

    unguarded = bf16(tiny_ham.x_test).argmax(1) != reference.argmax(1)
    assert unguarded.sum() >= 3  # the adversary does flip images when nothing guards them

    guarded = GuardedBf16Forward(bf16, exact, guard=2 * error)
    answer = guarded(tiny_ham.x_test)
    assert np.array_equal(answer.argmax(1), reference.argmax(1))
    assert guarded.images == len(reference)
    assert guarded.recomputed == int((top_gap(bf16(tiny_ham.x_test)) <= 2 * error).sum())
    assert 0 < guarded.recomputed < len(reference)  # the guard costs something, not everything
    decided = top_gap(bf16(tiny_ham.x_test)) > 2 * error
    np.testing.assert_allclose(answer[decided], bf16(tiny_ham.x_test)[decided])

    too_small = GuardedBf16Forward(bf16, exact, guard=error)  # the bound is tight: half fails
    assert not np.array_equal(too_small(tiny_ham.x_test).argmax(1), reference.argmax(1))


def test_openvino_bf16_serves_behind_its_guard_or_openvino_without_bf16_units(
    ham_stored, tiny_ham, data_dir, monkeypatch
):
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(data_dir))
    root, loaded = ham_stored
    served = serving_forward(loaded, OPENVINO_BF16, model_dir(root, loaded))
    if not bf16_units():
        assert (served.runtime, served.requested) == (OPENVINO, OPENVINO_BF16)
        assert "no bf16 units" in (served.fallback_reason or "")
        return

    record = read_record(runtime_dir(model_dir(root, loaded), OPENVINO_BF16))
    assert record is not None and record.guard is not None and record.parity is not None
    guard = record.guard
    assert guard.source == "training split"
    assert guard.max_abs_probability_diff > 0  # bf16 really computes differently from f32
    assert guard.guard == 2 * openvino_bf16.SAFETY * guard.max_abs_probability_diff
    assert guard.pixels_sha256 != record.parity.calibration_sha256  # never fitted on the gate's
    assert record.parity.calibration == "validation split"
    # it runs the openvino runtime's IR, which it names
    assert record.artefact_sha256 == artefact_sha256(runtime_dir(model_dir(root, loaded), OPENVINO))
    if record.parity.passed:
        assert (served.runtime, served.artefact_sha256) == (OPENVINO_BF16, record.artefact_sha256)
        assert isinstance(served.forward, GuardedBf16Forward)
        answer = served(tiny_ham.x_test)
        reference = keras_fp32(loaded.model)(tiny_ham.x_test)
        assert np.abs(answer - reference).max() <= guard.guard  # within the guarded error
    else:  # the f32 IR is tried before Keras
        assert served.requested == OPENVINO_BF16 and served.runtime in (OPENVINO, KERAS)
        assert "parity gate failed" in (served.fallback_reason or "")

    # the next load reuses the recorded guard and gate instead of measuring them again
    again = serving_forward(loaded, OPENVINO_BF16, model_dir(root, loaded))
    reread = read_record(runtime_dir(model_dir(root, loaded), OPENVINO_BF16))
    assert reread is not None and reread.created_at == record.created_at
    assert again.runtime == served.runtime


def test_without_bf16_units_openvino_bf16_serves_gated_openvino(
    ham_stored, tiny_ham, data_dir, monkeypatch
):
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(data_dir))
    monkeypatch.setattr(openvino_bf16, "bf16_units", lambda: False)  # a CPU without bf16 units
    root, loaded = ham_stored
    served = serving_forward(loaded, OPENVINO_BF16, model_dir(root, loaded))
    assert (served.runtime, served.requested) == (OPENVINO, OPENVINO_BF16)
    assert "no bf16 units" in (served.fallback_reason or "")
    assert not runtime_dir(model_dir(root, loaded), OPENVINO_BF16).exists()
    openvino_record = read_record(runtime_dir(model_dir(root, loaded), OPENVINO))
    assert openvino_record is not None and openvino_record.parity is not None  # gated as ever
    reference = keras_fp32(loaded.model)(tiny_ham.x_test)
    assert np.array_equal(served(tiny_ham.x_test).argmax(1), reference.argmax(1))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_can_be_configured(runtime):
    assert runtime in get_args(Settings.model_fields["serve_runtime"].annotation)
    assert len(get_args(Settings.model_fields["serve_runtime"].annotation)) == len(RUNTIMES)
