"""From a training spec to a stored, versioned model: the one call the CLI and job queue make."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from training.config import TrainingSpec
from training.data.registry import load_dataset, splits_for
from training.fit import ProgressListener, train
from training.store import ModelManifest, ModelStore


def train_and_store(
    spec: TrainingSpec,
    store: ModelStore,
    checkpoint_dir: str | Path,
    listener: ProgressListener | None = None,
    should_stop: Callable[[], bool] | None = None,
    verbose: int = 0,
) -> ModelManifest:
    """Load the data, train (resuming from ``checkpoint_dir`` if it holds a run), store the model.

    The manifest records the spec (a model's defense with it: ``training_spec.train.adversarial``
    and ``.noise_sigma``, the σ a randomized-smoothing certificate must reuse), the data
    fingerprint, history, best epoch and the validation and test metrics of the restored best
    weights.
    """
    data = load_dataset(spec.dataset)
    splits = splits_for(spec.dataset, data)
    result = train(spec, data, splits, checkpoint_dir, listener, should_stop, verbose)
    metrics = {"validation": result.validation}
    if result.test is not None:
        metrics["test"] = result.test
    return store.save(
        result.model,
        spec.name,
        result.architecture,
        spec.preprocess,
        list(data.class_names),
        data_fingerprint=data.fingerprint(),
        training_spec=spec.model_dump(mode="json"),
        history=result.history,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        metrics=metrics,
        accepts=spec.accepts,
    )
