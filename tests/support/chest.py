"""The chest pieces the PACS, DICOM and viewer tests share: one real study and an untrained model.

:func:`make_chest_study` writes the study that ``tests/pacs`` pushes into Orthanc and
``tests.support.viewer_pacs`` stores for ``tests/web``; :func:`save_chest_model` puts a model
declaring CR/DX chest images into a store, so a CT meets the acceptance check. Both live here so
no folder imports another folder's conftest or test module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


def make_chest_study(data_dir: Path, folder: Path) -> tuple[str, list[Path]]:
    """Files of one study: the real CR chest radiograph ``RG1_UNCR.dcm`` (pydicom-data, under
    ``data_dir``) as it is, first, plus pydicom's ``CT_small.dcm`` (a CT: a chest model refuses
    it) and ``rtplan.dcm`` (no image at all) moved into the radiograph's study and patient and
    written to ``folder``. Returns (Study Instance UID, files). Skips where the radiograph is
    missing."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    radiograph = data_dir / "dicom_samples" / "RG1_UNCR.dcm"
    if not radiograph.is_file():
        pytest.skip(f"{radiograph} is missing (see MEDROBUST_DATA_DIR/README.md)")
    header = dcmread(radiograph, stop_before_pixels=True)
    folder.mkdir(parents=True, exist_ok=True)
    files = [radiograph]
    for name in ("CT_small.dcm", "rtplan.dcm"):
        dataset = dcmread(get_testdata_file(name))
        dataset.StudyInstanceUID = header.StudyInstanceUID
        for keyword in PATIENT_KEYWORDS:
            setattr(dataset, keyword, header.get(keyword, ""))
        files.append(folder / name)
        dataset.save_as(files[-1], enforce_file_format=True)
    return str(header.StudyInstanceUID), files


def save_chest_model(
    store_dir: Path,
    name: str = "cxr",
    classes: Sequence[str] = ("normal", "pneumonia"),
    seed: int = 1,
    noise_sigma: float | None = None,
) -> str:
    """Save an untrained 32-px ResNet-50 baseline that declares CR/DX chest images into the
    store at ``store_dir`` (made if absent) as the next version of ``name``; returns its ref
    (``name:version``). Random weights, from ``seed``: the tests check the plumbing, not the
    finding, and a caller whose expectations were written against one seed's weights keeps it.

    ``noise_sigma``: recorded as the training recipe's ``train.noise_sigma`` (only that), so the
    model certifies at that σ as a noise-trained one would; its weights are still random."""
    import keras

    from training.dicom import DicomAcceptance
    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(seed)
    config = ArchitectureConfig(architecture="baseline", num_classes=len(classes), input_size=32)
    manifest = ModelStore(store_dir).save(
        build_from_config(config),
        name,
        config,
        PreprocessConfig(input_size=32),
        list(classes),
        accepts=DicomAcceptance(modalities=["CR", "DX"], body_parts=["CHEST"]),
        training_spec=None if noise_sigma is None else {"train": {"noise_sigma": noise_sigma}},
    )
    return manifest.ref
