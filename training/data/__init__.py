"""Dataset adapters, splits and the dataset registry.

Every adapter returns a :class:`LabeledImages`; configs name data through a :class:`DatasetSpec`.
Nothing here imports TensorFlow: decoding and batching belong to the input pipeline.
"""

from training.data.base import DatasetError, LabeledImages
from training.data.chestxray14 import load_chestxray14
from training.data.folders import load_image_folders
from training.data.ham10000 import load_ham10000
from training.data.kaggle_dr import load_kaggle_dr
from training.data.medmnist import load_medmnist
from training.data.registry import DatasetSpec, data_dir, load_dataset, resolve_path, splits_for
from training.data.splits import check_fractions, split_indices, subsample_stratified

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "LabeledImages",
    "check_fractions",
    "data_dir",
    "load_chestxray14",
    "load_dataset",
    "load_ham10000",
    "load_image_folders",
    "load_kaggle_dr",
    "load_medmnist",
    "resolve_path",
    "split_indices",
    "splits_for",
    "subsample_stratified",
]
