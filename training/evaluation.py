"""Robustness evaluation of stored models on a dataset split: what the CLI and job queue call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.data.base import LabeledImages
from training.data.registry import DatasetSpec, load_dataset, splits_for
from training.data.splits import subsample_stratified
from training.pipeline import prepared_arrays
from training.robustness import (
    EvaluationSpec,
    ModelIdentity,
    ProgressCallback,
    ShardResult,
    evaluate_shard,
)
from training.store import ModelManifest, ModelStore, parse_model_ref


def evaluation_samples(
    dataset: DatasetSpec, split: str = "test", limit: int | None = None, seed: int = 0
) -> tuple[LabeledImages, np.ndarray]:
    """The data and the dataset indices an evaluation runs on (a split, optionally capped).

    The indices double as sample ids, so every shard of an evaluation draws the same per-image
    randomness as the whole run.
    """
    data = load_dataset(dataset)
    splits = splits_for(dataset, data)
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(splits)}")
    indices = splits[split]
    if limit is not None and limit < len(indices):
        indices = subsample_stratified(indices, data.labels, limit, seed)
    return data, np.sort(indices)


def evaluate_stored(
    store: ModelStore,
    model_refs: Sequence[str],
    dataset: DatasetSpec,
    spec: EvaluationSpec,
    split: str = "test",
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: ProgressCallback | None = None,
) -> ShardResult:
    """Per-image outcomes of stored models on a dataset split (or one shard of it).

    ``build_report(merge_shards([...]), code_version())`` turns one or more of these into the
    report. All models must share their preprocessing so they see identical pixels.
    """
    loaded = [store.load(*parse_model_ref(ref)) for ref in model_refs]
    preprocess = {m.manifest.preprocess for m in loaded}
    if len(preprocess) != 1:
        raise ValueError("models to compare must share their preprocessing (input size, filter)")
    data, indices = evaluation_samples(dataset, split, limit, spec.seed)
    if shard is not None:
        indices = indices[shard[0] : shard[1]]
    subset = data.subset(indices)
    pixels = prepared_arrays(subset, preprocess.pop())
    models = [(model_identity(m.manifest), m.model) for m in loaded]
    return evaluate_shard(
        models, pixels, subset.labels, indices, data.class_names, spec, data.fingerprint(), progress
    )


def model_identity(manifest: ModelManifest) -> ModelIdentity:
    architecture = manifest.architecture
    return ModelIdentity(
        name=manifest.name,
        version=manifest.version,
        weights_sha256=manifest.weights_sha256,
        architecture=architecture.architecture,
        attention_variant=(
            architecture.attention_variant if architecture.architecture == "attention" else None
        ),
    )
