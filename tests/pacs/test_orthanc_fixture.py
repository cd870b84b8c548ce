"""The Orthanc fixture itself: it starts, speaks DICOMweb and accepts dcmtk's storescu."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.support.orthanc import Modality, Orthanc

pytestmark = pytest.mark.integration


def test_orthanc_accepts_storescu_and_answers_qido(orthanc: Orthanc) -> None:
    path = Path(get_testdata_file("CT_small.dcm"))
    study_uid = dcmread(path, stop_before_pixels=True).StudyInstanceUID

    orthanc.storescu(path)

    response = httpx.get(
        f"{orthanc.dicomweb_url}/studies/{study_uid}/instances",
        headers={"Accept": "application/dicom+json"},
    )
    assert response.status_code == 200
    assert len(response.json()) == 1
    assert orthanc.get("/system")["DicomAet"] == "ORTHANC"


def test_orthanc_knows_the_modalities_it_is_given(orthanc_factory) -> None:
    server = orthanc_factory(modalities={"ai": Modality("MEDROBUST_AI", "127.0.0.1", 11112)})
    assert server.get("/modalities") == ["ai"]
    server.put_modality("other", Modality("OTHER", "127.0.0.1", 11113))
    assert sorted(server.get("/modalities")) == ["ai", "other"]
