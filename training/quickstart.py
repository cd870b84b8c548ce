"""``medrobust quickstart``: from the staged HAM10000 data to the models the README's examples call.

A new user's first prediction should not wait for a real training run (hours on a CPU). This
trains two small models on a stratified sample of HAM10000 — ``derm`` (soft attention) and
``derm-baseline`` — at a low resolution for a few epochs, stores them, points their
``production`` alias at the new versions and makes ``derm:production`` the default model of task
``derm``: exactly the names the README's ``curl`` examples use. A running API sees all of it on
its next request (aliases and task defaults are read from the store per request).

The models are demonstrations, not diagnostic tools: a few hundred images at 48 px learn little
(the manifest records the recipe and the metrics say how little).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.architecture import Architecture
from training.config import ModelOptions, TrainConfig, TrainingSpec
from training.data.registry import DatasetSpec, resolve_path
from training.preprocess import PreprocessConfig
from training.store import ModelManifest, ModelStore
from training.task_defaults import set_task_default

TASK = "derm"
ALIAS = "production"
#: model name → architecture; the README's examples call both
MODELS: dict[str, Architecture] = {"derm": "attention", "derm-baseline": "baseline"}
DATASET = "ham10000_200x150"
METADATA = "HAM10000_metadata.csv"


@dataclass(frozen=True)
class QuickstartOptions:
    """The size of the demo run. Defaults: a few minutes per model on a 2-core CPU."""

    data: str = DATASET
    input_size: int = 48
    epochs: int = 3
    #: stratified cap on each of train / val / test (``DatasetSpec.limit_per_split``)
    limit_per_split: int = 200
    batch_size: int = 32


def missing_data(options: QuickstartOptions) -> str | None:
    """Why the quickstart cannot run here (a sentence for the user), or None when it can."""
    folder = resolve_path(options.data)
    if (folder / METADATA).is_file():
        return None
    return (
        f"the HAM10000 data is not staged: {folder / METADATA} is missing. Set "
        f"MEDROBUST_DATA_DIR to the folder that holds {options.data}/ (HAM10000 images and "
        f"metadata), or train on your own data: medrobust train --help"
    )


def quickstart_spec(
    name: str, architecture: Architecture, options: QuickstartOptions
) -> TrainingSpec:
    """One demo model's recipe: the CPU recipe of ``configs/ham10000-cpu-64.yaml``, shrunk."""
    return TrainingSpec(
        name=name,
        dataset=DatasetSpec(
            kind="ham10000",
            path=options.data,
            split="source",
            limit_per_split=options.limit_per_split,
        ),
        model=ModelOptions(architecture=architecture),
        preprocess=PreprocessConfig(input_size=options.input_size),
        train=TrainConfig(
            epochs=options.epochs,
            batch_size=options.batch_size,
            learning_rate=1e-3,  # from scratch: the paper's 0.01 swings too widely (see configs/)
            monitor="val_balanced_accuracy",
            patience=options.epochs,
        ),
    )


def run_quickstart(
    options: QuickstartOptions,
    store: ModelStore,
    checkpoint_root: Path,
    log: Callable[[str], None],
    verbose: int = 1,
) -> list[ModelManifest]:
    """Train and store both demo models, move their aliases, set the task default."""
    from training.workflow import train_and_store  # the ML stack: only once we train

    manifests = []
    for name, architecture in MODELS.items():
        spec = quickstart_spec(name, architecture, options)
        log(f"training {name} ({architecture}, {options.input_size} px, {options.epochs} epochs)")
        checkpoints = checkpoint_root / (
            f"quickstart-{name}-{options.input_size}px-{options.epochs}e-{options.limit_per_split}"
        )
        manifest = train_and_store(spec, store, checkpoints, verbose=verbose)
        store.set_alias(name, ALIAS, manifest.version)
        log(f"stored {manifest.ref} as {name}:{ALIAS} (sha256 {manifest.weights_sha256[:12]})")
        manifests.append(manifest)
    set_task_default(store.root, TASK, f"{TASK}:{ALIAS}")
    log(f"task {TASK!r} now answers with {TASK}:{ALIAS}")
    return manifests


def example_image(options: QuickstartOptions) -> Path | None:
    """A lesion image of the staged data to send in the first request."""
    folder = resolve_path(options.data)
    return next(iter(sorted(folder.glob("images/*.jpg"))), None) or next(
        folder.rglob("*.jpg"), None
    )


def try_it(image: Path | str, base_url: str = "http://127.0.0.1:8000") -> str:
    """The README's first ``/predict`` example, with a real image: what to run next."""
    return (
        f"curl -F image=@{image} -F models={TASK}:{ALIAS} -F models=derm-baseline "
        f"{base_url}/predict"
    )
