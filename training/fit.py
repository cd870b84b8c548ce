"""Training with the paper's recipe, resumable after a crash, observable while it runs.

:func:`train` builds the model, runs Keras ``fit`` over the input pipeline and returns the model
with its best weights restored plus metrics on the validation and test splits. Every epoch it
writes a checkpoint (model + optimizer state, best weights, early-stopping state and history) to
``checkpoint_dir``; calling :func:`train` again with the same directory continues where it stopped.

A defended recipe (adversarial training or noise augmentation, :mod:`training.defenses`) runs
the same epochs and callbacks one ``train_on_batch`` at a time instead, because each batch must
be made against the weights of the step that trains on it; such a run resumes exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import keras
import numpy as np
from pydantic import BaseModel

from training import defenses, gradients
from training.architecture import ArchitectureConfig
from training.config import TrainConfig, TrainingSpec
from training.data.base import LabeledImages
from training.metrics import ClassificationMetrics, classification_metrics, softmax
from training.models.builders import build_from_config
from training.pipeline import ArrayBatches, Batches, array_batches, make_dataset
from training.preprocess import PreprocessConfig

LAST_CHECKPOINT = "last.keras"
WEIGHTS_SUFFIX = ".weights.h5"
STATE_FILE = "state.json"


class ProgressEvent(BaseModel):
    """What a subscriber (the CLI, a job queue) hears while training runs."""

    stage: str  # "batch" | "epoch" | "done"
    epoch: int  # 1-based
    epochs: int
    batch: int = 0
    batches: int = 0
    metrics: dict[str, float] = {}


ProgressListener = Callable[[ProgressEvent], None]


@dataclass
class TrainingResult:
    model: keras.Model
    architecture: ArchitectureConfig
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    validation: ClassificationMetrics
    test: ClassificationMetrics | None


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """``N / (K · n_k)``: each class contributes equally to the loss; mean sample weight is 1."""
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = [k for k in range(num_classes) if counts[k] == 0]
        raise ValueError(f"the training split has no examples of classes {missing}")
    return {k: float(len(labels) / (num_classes * counts[k])) for k in range(num_classes)}


def compile_for_training(model: keras.Model, config: TrainConfig) -> None:
    """The paper's optimiser and loss: Adam(lr, ε) and cross-entropy on the logits (TRADES'
    loss instead when the recipe trains with TRADES)."""
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, epsilon=config.adam_epsilon),
        loss=defenses.training_loss(config),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def predict_logits(model: keras.Model, dataset: Batches) -> tuple[np.ndarray, np.ndarray]:
    """Logits and integer labels over one pass of a ``make_dataset(training=False)`` dataset."""
    logits, labels = [], []
    for pixels, onehot in dataset:
        logits.append(gradients.batch_logits(model, pixels))
        labels.append(np.argmax(onehot, axis=1))
    return np.concatenate(logits), np.concatenate(labels)


def evaluate_split(model: keras.Model, dataset: Batches) -> tuple[ClassificationMetrics, float]:
    """Metrics and mean (unweighted) cross-entropy of ``model`` on one split."""
    logits, labels = predict_logits(model, dataset)
    probabilities = softmax(logits)
    loss = float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))
    return classification_metrics(labels, probabilities), loss


class _ValidationMetrics(keras.callbacks.Callback):
    """Adds val_loss / val_accuracy / val_balanced_accuracy / val_macro_auc to each epoch's logs.

    One prediction pass gives every metric (Keras' own validation would be a second pass).
    """

    def __init__(self, dataset: Batches) -> None:
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics, loss = evaluate_split(self.model, self.dataset)
        if logs is not None:
            logs.update(
                val_loss=loss,
                val_accuracy=metrics.accuracy,
                val_balanced_accuracy=metrics.balanced_accuracy,
                val_macro_auc=metrics.macro_roc_auc if metrics.macro_roc_auc is not None else 0.5,
            )


def best_weights_name(epoch: int) -> str:
    return f"best-epoch{epoch}{WEIGHTS_SUFFIX}"


class _CheckpointAndEarlyStop(keras.callbacks.Callback):
    """Per-epoch checkpoint plus early stopping whose state survives a crash.

    Keras' EarlyStopping keeps its best weights and patience counter in memory; here both live in
    ``checkpoint_dir`` so a resumed run stops at the same epoch an uninterrupted one would.
    """

    def __init__(self, directory: Path, config: TrainConfig, state: dict[str, Any]) -> None:
        super().__init__()
        self.directory = directory
        self.config = config
        self.state = state
        self.sign = 1.0 if config.monitor == "val_loss" else -1.0  # minimise sign * value

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        for key, value in logs.items():
            self.state["history"].setdefault(key, []).append(float(value))
        current = self.sign * float(logs[self.config.monitor])
        best = self.state["best_value"]
        if best is None or current < best - self.config.min_delta:
            # A new file per best epoch, referenced only once state.json commits it: a kill
            # mid-write leaves an unreferenced file, never a half-written "best" to restore.
            name = best_weights_name(epoch + 1)
            self.model.save_weights(self.directory / name)
            self.state.update(best_value=current, best_epoch=epoch + 1, wait=0, best_weights=name)
        else:
            self.state["wait"] += 1
        self.state["epoch"] = epoch + 1
        if self.state["wait"] >= self.config.patience:
            self.state["stopped_early"] = True
            self.model.stop_training = True
        partial = self.directory / f"partial.{LAST_CHECKPOINT}"
        self.model.save(partial)
        partial.replace(self.directory / LAST_CHECKPOINT)  # atomic: never half a checkpoint
        _write_json_atomically(self.directory / STATE_FILE, self.state)
        for stale in self.directory.glob(f"best-epoch*{WEIGHTS_SUFFIX}"):
            if stale.name != self.state["best_weights"]:
                stale.unlink(missing_ok=True)


class _Warmup(keras.callbacks.Callback):
    """Linear learning-rate warm-up, a function of the epoch alone so a resume lands exactly."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        scale = min(1.0, (epoch + 1) / self.config.warmup_epochs)
        self.model.optimizer.learning_rate.assign(self.config.learning_rate * scale)


class _Progress(keras.callbacks.Callback):
    """Forwards batch and epoch ends to a listener; stops training when ``should_stop`` says so."""

    def __init__(
        self,
        listener: ProgressListener | None,
        should_stop: Callable[[], bool] | None,
        epochs: int,
        batches: int,
    ) -> None:
        super().__init__()
        self.listener, self.should_stop = listener, should_stop
        self.epochs, self.batches = epochs, batches
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._emit("batch", logs, batch=batch + 1)
        if self.should_stop is not None and self.should_stop():
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._emit("epoch", logs, batch=self.batches)

    def _emit(self, stage: str, logs: dict[str, Any] | None, batch: int) -> None:
        if self.listener is None:
            return
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, Real)}
        self.listener(
            ProgressEvent(
                stage=stage,
                epoch=self.epoch,
                epochs=self.epochs,
                batch=batch,
                batches=self.batches,
                metrics=metrics,
            )
        )


def train(
    spec: TrainingSpec,
    data: LabeledImages,
    splits: dict[str, np.ndarray],
    checkpoint_dir: str | Path,
    listener: ProgressListener | None = None,
    should_stop: Callable[[], bool] | None = None,
    verbose: int = 0,
) -> TrainingResult:
    """Train ``spec`` on ``data`` split by ``splits`` (index arrays for train/val[/test])."""
    config = spec.train
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)

    architecture = spec.model.architecture_config(data.num_classes, spec.preprocess.input_size)
    train_data, val_data = data.subset(splits["train"]), data.subset(splits["val"])
    val_ds = _eval_dataset(val_data, spec.preprocess, config.batch_size)
    steps = max(1, math.ceil(config.epoch_fraction * len(train_data) / config.batch_size))

    state = _load_state(directory)
    if state is not None:
        model = keras.saving.load_model(directory / LAST_CHECKPOINT, safe_mode=True)
    else:
        state = {
            "epoch": 0,
            "best_value": None,
            "best_weights": None,
            "best_epoch": 0,
            "wait": 0,
            "stopped_early": False,
            "history": {},
        }
        model = build_from_config(architecture, weights=spec.model.weights)
        compile_for_training(model, config)

    callbacks: list[keras.callbacks.Callback] = [
        _ValidationMetrics(val_ds),
        _CheckpointAndEarlyStop(directory, config, state),
        _Progress(listener, should_stop, config.epochs, steps),
    ]
    if config.warmup_epochs:
        callbacks.insert(0, _Warmup(config))
    class_weight = (
        inverse_frequency_weights(train_data.labels, data.num_classes)
        if config.class_weighting == "inverse_frequency"
        else None
    )
    remaining = state["epoch"] < config.epochs and not state["stopped_early"]
    if remaining and config.defended:
        batches = array_batches(train_data, spec.preprocess, config.batch_size, True, config.seed)
        _fit_defended(
            model, config, batches, class_weight, steps, state["epoch"], callbacks, verbose
        )
    elif remaining:
        model.fit(
            make_dataset(train_data, spec.preprocess, config.batch_size, True, config.seed),
            epochs=config.epochs,
            initial_epoch=state["epoch"],
            steps_per_epoch=steps,
            class_weight=class_weight,
            shuffle=False,  # the input pipeline shuffles
            callbacks=callbacks,
            verbose=verbose,
        )

    model.load_weights(directory / state["best_weights"])
    validation, _ = evaluate_split(model, val_ds)
    test = None
    if "test" in splits and len(splits["test"]):
        test_ds = _eval_dataset(data.subset(splits["test"]), spec.preprocess, config.batch_size)
        test, _ = evaluate_split(model, test_ds)
    if listener is not None:
        listener(
            ProgressEvent(
                stage="done",
                epoch=state["epoch"],
                epochs=config.epochs,
                metrics={"val_balanced_accuracy": validation.balanced_accuracy},
            )
        )
    return TrainingResult(
        model=model,
        architecture=architecture,
        history=state["history"],
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        validation=validation,
        test=test,
    )


def _fit_defended(
    model: keras.Model,
    config: TrainConfig,
    batches: ArrayBatches,
    class_weight: dict[int, float] | None,
    steps: int,
    initial_epoch: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
) -> None:
    """``model.fit``'s epoch loop, one ``train_on_batch`` at a time, for defended recipes.

    Adversarial examples must be made against the weights of the step that trains on them, so
    the batch is built here, synchronously, never ahead in an input pipeline's threads. Batch
    ``i`` of the run is ``batches[i]`` (a function of ``i`` alone) and every random draw is
    seeded by (seed, epoch, batch), so a run resumed at ``initial_epoch`` is the same run.
    Callbacks see what ``fit`` shows them: epoch and batch begin/end, running-mean logs.
    """
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=config.epochs,
        steps=steps,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, config.epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs: dict[str, float] = {}
        # Keras 3's train_on_batch resets the metrics on every call: its values are the batch's
        # alone, so the epoch's running means (fit's: weighted by rows) are kept here
        totals: dict[str, float] = {}
        rows = 0
        for batch in range(steps):
            callback_list.on_train_batch_begin(batch)
            pixels, onehot = batches[epoch * steps + batch]
            weights = defenses.class_sample_weights(onehot, class_weight)
            # seeded first: a train-mode attack then draws the dropout masks the step will use
            defenses.reseed_dropout(model, config.seed, epoch, batch)
            x, y, sample_weight = defenses.defended_batch(
                model, config, pixels, onehot, weights, epoch, batch, steps
            )
            result = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
            rows += len(x)
            for key, value in result.items():
                totals[key] = totals.get(key, 0.0) + float(value) * len(x)
            logs = {key: total / rows for key, total in totals.items()}
            callback_list.on_train_batch_end(batch, logs)
            if model.stop_training:
                break
        callback_list.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    callback_list.on_train_end()


def _eval_dataset(data: LabeledImages, config: PreprocessConfig, batch_size: int) -> Batches:
    return make_dataset(data, config, batch_size, training=False)


def _load_state(directory: Path) -> dict[str, Any] | None:
    """The saved state when a complete checkpoint exists, else None (a fresh start)."""
    state_path = directory / STATE_FILE
    if not (state_path.is_file() and (directory / LAST_CHECKPOINT).is_file()):
        return None
    return json.loads(state_path.read_text())


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write to a sibling file and rename, so a crash never leaves half a state file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)
