"""Training: the paper's recipe wired up, checkpoints that survive a crash, progress, stopping."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.support.training_specs import tiny_spec
from training.fit import (
    LAST_CHECKPOINT,
    STATE_FILE,
    ProgressEvent,
    inverse_frequency_weights,
    train,
)

pytestmark = pytest.mark.slow


def test_a_run_reports_progress_checkpoints_and_metrics(tmp_path, tiny_images, tiny_splits):
    events: list[ProgressEvent] = []
    result = train(tiny_spec(), tiny_images, tiny_splits, tmp_path, listener=events.append)

    assert [e.stage for e in events].count("epoch") == 2
    assert [e.stage for e in events].count("batch") == 2 * 2  # 16 train images / batch 8
    assert events[-1].stage == "done"
    assert "loss" in events[0].metrics
    assert result.epochs_run == 2 and len(result.history["val_loss"]) == 2
    assert set(result.history) >= {"loss", "accuracy", "val_balanced_accuracy", "val_macro_auc"}
    assert result.validation.n == 4 and result.test is not None and result.test.n == 4
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["epoch"] == 2 and state["best_epoch"] in (1, 2)


def test_a_crashed_run_resumes_from_its_last_checkpoint(tmp_path, tiny_images, tiny_splits):
    def crash_in_epoch_two(event: ProgressEvent) -> None:
        if event.stage == "batch" and event.epoch == 2:
            raise RuntimeError("worker died")

    spec = tiny_spec(epochs=3)
    with pytest.raises(RuntimeError, match="worker died"):
        train(spec, tiny_images, tiny_splits, tmp_path, listener=crash_in_epoch_two)
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["epoch"] == 1

    epochs_seen: list[int] = []
    result = train(
        spec,
        tiny_images,
        tiny_splits,
        tmp_path,
        listener=lambda e: epochs_seen.append(e.epoch) if e.stage == "epoch" else None,
    )
    assert epochs_seen == [2, 3]  # epoch 1 is not trained again
    assert result.epochs_run == 3
    assert result.history["val_loss"][0] == saved["history"]["val_loss"][0]
    assert len(result.history["val_loss"]) == 3
    # The optimizer state came back too: the last checkpoint (end of epoch 3) counts 2 steps per
    # epoch for all 3 epochs (4 had the resume restarted Adam). Not the returned model's count:
    # it is restored to the best epoch's weights file, optimizer included, and which epoch is
    # best on 8 images depends on the CPU's rounding.
    last = keras.saving.load_model(tmp_path / LAST_CHECKPOINT, safe_mode=True)
    assert int(last.optimizer.iterations.numpy()) == 6
    assert int(result.model.optimizer.iterations.numpy()) == 2 * result.best_epoch


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(
    tmp_path, tiny_images, tiny_splits
):
    # min_delta so large that no epoch after the first counts as an improvement
    spec = tiny_spec(epochs=10, patience=2, min_delta=1e9)
    result = train(spec, tiny_images, tiny_splits, tmp_path)
    assert result.best_epoch == 1
    assert result.epochs_run == 3
    best_val_loss = result.history["val_loss"][0]
    from training.fit import _eval_dataset, evaluate_split

    _, restored_loss = evaluate_split(
        result.model, _eval_dataset(tiny_images.subset(tiny_splits["val"]), spec.preprocess, 8)
    )
    assert restored_loss == pytest.approx(best_val_loss, rel=1e-4)


def test_a_cancelled_run_stops_after_the_current_batch(tmp_path, tiny_images, tiny_splits):
    result = train(
        tiny_spec(epochs=5), tiny_images, tiny_splits, tmp_path, should_stop=lambda: True
    )
    assert result.epochs_run == 1


def test_a_fraction_of_the_train_set_per_epoch(tmp_path, tiny_images, tiny_splits):
    batches: list[int] = []
    train(
        tiny_spec(epochs=1, epoch_fraction=0.5),
        tiny_images,
        tiny_splits,
        tmp_path,
        listener=lambda e: batches.append(e.batch) if e.stage == "batch" else None,
    )
    assert batches == [1]  # half of 16 images is one batch of 8


def test_inverse_frequency_class_weights_balance_the_classes():
    weights = inverse_frequency_weights(np.array([0, 0, 0, 1]), 2)
    assert weights == {0: 4 / 6, 1: 2.0}
    with pytest.raises(ValueError, match="no examples of classes \\[2\\]"):
        inverse_frequency_weights(np.array([0, 1]), 3)
