"""A real Orthanc holding one study, for the ``/pacs`` routes and the viewer's "From PACS".

The study is the real CR chest radiograph ``RG1_UNCR.dcm`` (pydicom-data, from
MEDROBUST_DATA_DIR) as it is, plus pydicom's ``CT_small.dcm`` (a CT image) and ``rtplan.dcm``
(no image at all) moved into its study and patient, stored through Orthanc's REST API. The same
three files as ``tests/pacs``' round trip, built here so ``tests/web`` does not import another
folder's conftest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.orthanc import Orthanc, missing_tools, running_orthanc

PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


@dataclass(frozen=True)
class StoredFile:
    """One file as stored in the PACS: where it lies, its UIDs, modality and exact bytes."""

    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    modality: str
    body_part: str | None
    data: bytes


@dataclass(frozen=True)
class PacsStudy:
    orthanc: Orthanc
    study_instance_uid: str
    files: dict[str, StoredFile]  # by file name
    patient_name: str


def require_pacs_tools() -> None:
    """Skip, naming the packages, where Orthanc, its DICOMweb plugin or dcmtk is missing."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"PACS tools not installed: {' '.join(missing)} "
            "(run scripts/ensure-pacs-tools.sh as root, or apt-get install them)"
        )


def _study_files(data_dir: Path, folder: Path) -> list[Path]:
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
    return files


@contextlib.contextmanager
def orthanc_with_study(data_dir: Path, workdir: Path) -> Iterator[PacsStudy]:
    """Start an Orthanc in ``workdir``, store the study, yield it; stop Orthanc after."""
    from pydicom import dcmread

    require_pacs_tools()
    files = _study_files(data_dir, workdir / "files")
    with running_orthanc(workdir / "orthanc") as orthanc:
        stored = {}
        for path in files:
            orthanc.upload(path)
            header = dcmread(path, stop_before_pixels=True)
            stored[path.name] = StoredFile(
                path=path,
                sop_instance_uid=str(header.SOPInstanceUID),
                series_instance_uid=str(header.SeriesInstanceUID),
                modality=str(header.Modality),
                body_part=header.get("BodyPartExamined"),
                data=path.read_bytes(),
            )
        first = dcmread(files[0], stop_before_pixels=True)
        yield PacsStudy(orthanc, str(first.StudyInstanceUID), stored, str(first.PatientName))
