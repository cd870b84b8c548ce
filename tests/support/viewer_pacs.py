"""A real Orthanc holding one study, for the ``/pacs`` routes and the viewer's "From PACS".

The study is :func:`~tests.support.chest.make_chest_study`'s (the real CR chest radiograph
``RG1_UNCR.dcm``, a CT and an RT plan: the same three files as ``tests/pacs``' round trip),
stored through Orthanc's REST API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.chest import make_chest_study
from tests.support.orthanc import Orthanc, require_pacs_tools, running_orthanc


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


@contextlib.contextmanager
def orthanc_with_study(data_dir: Path, workdir: Path) -> Iterator[PacsStudy]:
    """Start an Orthanc in ``workdir``, store the study, yield it; stop Orthanc after."""
    from pydicom import dcmread

    require_pacs_tools()
    study_uid, files = make_chest_study(data_dir, workdir / "files")
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
        patient = dcmread(files[0], stop_before_pixels=True).PatientName
        yield PacsStudy(orthanc, study_uid, stored, str(patient))
