"""DIMSE out: our C-STORE SCU against a real Orthanc (accepted, and refused with a clear error)."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.pacs.dimse import DicomNode, DimseError, send_datasets
from tests.support.orthanc import Orthanc

pytestmark = pytest.mark.integration


def test_send_datasets_stores_in_orthanc(orthanc: Orthanc) -> None:
    datasets = [dcmread(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm")]
    node = DicomNode(aet=orthanc.aet, host=orthanc.host, port=orthanc.dicom_port)

    sent = send_datasets(datasets, node, calling_aet="MEDROBUST")

    assert sent == [str(d.SOPInstanceUID) for d in datasets]
    for dataset in datasets:
        found = orthanc.study_instances(str(dataset.StudyInstanceUID))
        uids = {i["MainDicomTags"]["SOPInstanceUID"] for i in found}
        assert str(dataset.SOPInstanceUID) in uids


def test_send_datasets_names_the_node_that_refuses(orthanc: Orthanc) -> None:
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    wrong_aet = DicomNode(aet="NOT_ORTHANC", host=orthanc.host, port=orthanc.dicom_port)

    with pytest.raises(DimseError, match=r"NOT_ORTHANC@127\.0\.0\.1:\d+ refused"):
        send_datasets([dataset], wrong_aet, timeout_s=5)
    assert orthanc.get("/instances") == []
