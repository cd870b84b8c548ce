"""Attacking models: images in memory (:func:`evaluate_shard`) or stored models on a dataset."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import keras
import numpy as np

from training import gradients
from training.data.base import LabeledImages
from training.data.registry import DatasetSpec, load_dataset, splits_for
from training.data.splits import subsample_stratified
from training.explain.cam import get_method
from training.explain.compare import MapComparison, compare_maps
from training.model_ref import ModelIdentity, ModelRef
from training.pipeline import prepared_arrays
from training.robustness.report import build_report
from training.robustness.results import AdversarialOutcomes, RobustnessReport, ShardResult
from training.robustness.spec import EvaluationSpec
from training.store import ModelLoader

ProgressCallback = Callable[[int, int], None]  # (units done, units total)


def evaluate_shard(
    models: Sequence[tuple[ModelIdentity, keras.Model]],
    pixels: np.ndarray,
    labels: np.ndarray,
    sample_ids: np.ndarray,
    class_names: Sequence[str],
    spec: EvaluationSpec,
    dataset_fingerprint: str | None = None,
    progress: ProgressCallback | None = None,
) -> ShardResult:
    """Attack every model on ``pixels`` (prepared, raw [0, 255]) for every attack and ε."""
    spec.validate_attacks()
    labels = np.asarray(labels, dtype=np.int64)
    batches = [slice(i, i + spec.batch_size) for i in range(0, len(pixels), spec.batch_size)]
    attacked_eps = [e for e in spec.epsilons if e > 0]
    total = len(models) * (1 + len(spec.attacks) * len(attacked_eps)) * len(batches)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    cam = get_method(spec.explain) if spec.explain else None
    clean: dict[str, list[int]] = {}
    adversarial: list[AdversarialOutcomes] = []
    for identity, model in models:
        clean_pred = np.empty(len(pixels), dtype=np.int64)
        clean_maps: list[np.ndarray] = []
        for batch in batches:
            clean_pred[batch] = gradients.logits(model, pixels[batch]).argmax(axis=1)
            if cam is not None:
                clean_maps.append(cam.explain(model, pixels[batch], labels[batch]).maps)
            tick()
        clean[identity.key] = clean_pred.tolist()
        for attack_spec, epsilon in itertools.product(spec.attacks, spec.epsilons):
            if epsilon == 0:
                adversarial.append(_unattacked(identity.key, attack_spec.name, clean_pred))
                continue
            attack = attack_spec.make(epsilon, spec.seed)
            predictions: list[int] = []
            linf: list[float] = []
            l2: list[float] = []
            comparisons: list[MapComparison] = []
            for k, batch in enumerate(batches):
                x = pixels[batch]
                x_adv = attack.generate(model, x, labels[batch], sample_ids[batch])
                delta = (x_adv - x).reshape(len(x), -1)
                predictions += gradients.logits(model, x_adv).argmax(axis=1).tolist()
                linf += np.abs(delta).max(axis=1).tolist()
                l2 += np.linalg.norm(delta, axis=1).tolist()
                if cam is not None:
                    adversarial_maps = cam.explain(model, x_adv, labels[batch]).maps
                    comparisons += compare_maps(clean_maps[k], adversarial_maps)
                tick()
            adversarial.append(
                AdversarialOutcomes(
                    model=identity.key,
                    attack=attack_spec.name,
                    epsilon=epsilon,
                    predictions=predictions,
                    linf=linf,
                    l2=l2,
                    map_comparisons=comparisons if cam is not None else None,
                )
            )
    return ShardResult(
        spec=spec,
        models=[identity for identity, _ in models],
        class_names=list(class_names),
        dataset_fingerprint=dataset_fingerprint,
        sample_ids=[int(i) for i in sample_ids],
        labels=labels.tolist(),
        clean_predictions=clean,
        adversarial=adversarial,
    )


def _unattacked(model: str, attack: str, clean_pred: np.ndarray) -> AdversarialOutcomes:
    zeros = [0.0] * len(clean_pred)
    return AdversarialOutcomes(
        model=model,
        attack=attack,
        epsilon=0.0,
        predictions=clean_pred.tolist(),
        linf=zeros,
        l2=list(zeros),
    )


def evaluate(
    models: Sequence[tuple[ModelIdentity, keras.Model]],
    pixels: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    spec: EvaluationSpec,
    code_version: str,
    dataset_fingerprint: str | None = None,
    sample_ids: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> RobustnessReport:
    """Evaluate in one piece: the report of a single shard holding every image."""
    ids = np.arange(len(pixels)) if sample_ids is None else np.asarray(sample_ids)
    shard = evaluate_shard(
        models, pixels, labels, ids, class_names, spec, dataset_fingerprint, progress
    )
    return build_report(shard, code_version)


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
    store: ModelLoader,
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
    refs = [ModelRef.parse(ref) for ref in model_refs]
    loaded = [store.load(ref.name, ref.selector) for ref in refs]
    preprocess = {m.manifest.preprocess for m in loaded}
    if len(preprocess) != 1:
        raise ValueError("models to compare must share their preprocessing (input size, filter)")
    data, indices = evaluation_samples(dataset, split, limit, spec.seed)
    if shard is not None:
        indices = indices[shard[0] : shard[1]]
    subset = data.subset(indices)
    pixels = prepared_arrays(subset, preprocess.pop())
    models = [(ModelIdentity.of(m.manifest), m.model) for m in loaded]
    return evaluate_shard(
        models, pixels, subset.labels, indices, data.class_names, spec, data.fingerprint(), progress
    )
