"""Stored models for the serving-runtime tests (training/runtimes/): the tiny HAM10000 CNN of
:func:`tests.support.tiny_models.ham_case` saved with a training spec whose validation split is
real HAM10000 (a few images a class), and a deliberately broken OpenVINO conversion of it."""

from __future__ import annotations

from pathlib import Path

import keras

from training.architecture import ArchitectureConfig
from training.config import TrainingSpec
from training.data.registry import DatasetSpec
from training.preprocess import PreprocessConfig
from training.runtimes import OPENVINO, runtime_dir
from training.runtimes.openvino_ir import ensure_ir
from training.store import LoadedModel, ModelStore

HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
SIZE = 32
#: images per split of the stored spec's dataset: a validation split of ~this many real images
PER_SPLIT = 70


def ham_spec(name: str) -> TrainingSpec:
    """A spec whose dataset is the HAM10000 folder under MEDROBUST_DATA_DIR, our own split."""
    dataset = DatasetSpec(
        kind="ham10000", path="ham10000_200x150", split="source", limit_per_split=PER_SPLIT
    )
    return TrainingSpec(name=name, dataset=dataset, preprocess=PreprocessConfig(input_size=SIZE))


def store_ham_model(
    model: keras.Model, root: Path, name: str = "ham", with_spec: bool = True
) -> tuple[Path, LoadedModel]:
    """``model`` saved as ``name`` v1 (with :func:`ham_spec` unless told not to), loaded back."""
    store = ModelStore(root)
    store.save(
        model,
        name,
        ArchitectureConfig(num_classes=len(HAM_CLASSES), input_size=SIZE),
        PreprocessConfig(input_size=SIZE),
        HAM_CLASSES,
        training_spec=ham_spec(name).model_dump(mode="json") if with_spec else None,
    )
    return root, store.load(name)


def model_dir(root: Path, loaded: LoadedModel) -> Path:
    return root / loaded.manifest.name / str(loaded.manifest.version)


def plant_channel_swapped_ir(root: Path, loaded: LoadedModel) -> None:
    """Put a wrong conversion in the model's OpenVINO cache: the IR of the model behind an RGB →
    BGR swap, recorded as derived from the stored weights (so the cache accepts it), as a
    converter that got the channel order wrong would leave it."""
    pixels = keras.Input(loaded.model.input_shape[1:])
    swapped = keras.layers.Lambda(lambda x: keras.ops.flip(x, axis=-1))(pixels)
    broken = keras.Model(pixels, loaded.model(swapped))
    directory = runtime_dir(model_dir(root, loaded), OPENVINO)
    ensure_ir(broken, loaded.manifest.weights_sha256, directory)
