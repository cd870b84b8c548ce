"""Fixtures for the PACS tests: a real Orthanc per test (see ``tests.support.orthanc``).

Tests that need Orthanc, its DICOMweb plugin or dcmtk skip, naming the Debian packages to install
(``scripts/ensure-pacs-tools.sh`` installs them; ``make test`` runs it first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.chest import make_chest_study, save_chest_model
from tests.support.orthanc import Modality, Orthanc, require_pacs_tools, running_orthanc


@pytest.fixture(scope="session")
def pacs_tools() -> None:
    """Skip, naming the packages, where Orthanc, orthanc-dicomweb or dcmtk is not installed."""
    require_pacs_tools()


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


CHEST_CLASSES = ("no_finding", "pneumothorax")


def save_tiny_chest_model(store_dir: Path) -> str:
    """``chest-tiny``, :func:`~tests.support.chest.save_chest_model`'s CR/DX chest model with
    these tests' classes and seed; returns its ref (``name:version``)."""
    return save_chest_model(store_dir, "chest-tiny", CHEST_CLASSES, seed=0)


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
