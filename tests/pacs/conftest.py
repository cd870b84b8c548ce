"""Fixtures for the PACS tests: a real Orthanc per test (see ``tests.support.orthanc``).

Tests that need Orthanc, its DICOMweb plugin or dcmtk skip, naming the Debian packages to install
(``scripts/ensure-pacs-tools.sh`` installs them; ``make test`` runs it first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.orthanc import Modality, Orthanc, missing_tools, running_orthanc


@pytest.fixture(scope="session")
def pacs_tools() -> None:
    """Skip, naming the packages, where Orthanc, orthanc-dicomweb or dcmtk is not installed."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"PACS tools not installed: {' '.join(missing)} "
            "(run scripts/ensure-pacs-tools.sh as root, or apt-get install them)"
        )


OrthancFactory = Callable[..., Orthanc]


@pytest.fixture
def orthanc_factory(pacs_tools: None, tmp_path: Path) -> Iterator[OrthancFactory]:
    """Start Orthancs with chosen DICOM modalities: ``factory(modalities={"ai": Modality(...)})``.

    Every server started this way is stopped at the end of the test.
    """
    with contextlib.ExitStack() as stack:
        count = 0

        def start(
            modalities: Mapping[str, Modality] | None = None, aet: str = "ORTHANC"
        ) -> Orthanc:
            nonlocal count
            count += 1
            workdir = tmp_path / f"orthanc-{count}"
            return stack.enter_context(running_orthanc(workdir, modalities, aet))

        yield start


@pytest.fixture
def orthanc(orthanc_factory: OrthancFactory) -> Orthanc:
    """A fresh, empty Orthanc with DICOMweb on loopback ports, for one test."""
    return orthanc_factory()


CHEST_CLASSES = ["no_finding", "pneumothorax"]


def save_tiny_chest_model(store_dir: Path, name: str = "chest-tiny") -> str:
    """An untrained 32-px ResNet-50 declaring CR/DX chest images, stored in ``store_dir``.

    Returns its ref (``name:version``). Random weights: these tests check the plumbing, not
    the finding.
    """
    import keras

    from training.dicom import DicomAcceptance
    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(0)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    manifest = ModelStore(store_dir).save(
        build_from_config(config),
        name,
        config,
        PreprocessConfig(input_size=32),
        CHEST_CLASSES,
        accepts=DicomAcceptance(modalities=["CR", "DX"], body_parts=["CHEST"]),
    )
    return manifest.ref


PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


def make_chest_study(data_dir: Path, folder: Path) -> tuple[str, list[Path]]:
    """Files of one study: the real CR chest radiograph ``RG1_UNCR.dcm`` as it is, plus
    pydicom's ``CT_small.dcm`` (a CT: the chest model refuses it) and ``rtplan.dcm`` (no image)
    moved into the radiograph's study and patient. Returns (Study Instance UID, files)."""
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


@pytest.fixture(scope="session")
def chest_study_files(data_dir: Path) -> Callable[[Path], tuple[str, list[Path]]]:
    """``make(folder) -> (study_uid, files)``: see :func:`make_chest_study`."""
    return lambda folder: make_chest_study(data_dir, folder)


@pytest.fixture(scope="session")
def tiny_chest_model() -> Callable[[Path], str]:
    """``save(store_dir) -> ref``: puts the tiny CR/DX chest model into a store."""
    return save_tiny_chest_model


@pytest.fixture(scope="session")
def chest_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model store holding the tiny chest model, shared by a session: (store_dir, ref)."""
    store_dir = tmp_path_factory.mktemp("models")
    return store_dir, save_tiny_chest_model(store_dir)
