"""Fixtures for the PACS tests: a real Orthanc per test (see ``orthanc.py``).

Tests that need Orthanc, its DICOMweb plugin or dcmtk skip, naming the Debian packages to install
(``scripts/ensure-pacs-tools.sh`` installs them; ``make test`` runs it first).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from orthanc import Modality, Orthanc, missing_tools, running_orthanc

# the job tests' real Celery worker and uvicorn API (tests/service/jobs_fixtures.py) serve here too
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))


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
