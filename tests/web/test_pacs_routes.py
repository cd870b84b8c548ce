"""``/pacs`` (the viewer's "From PACS") in-process (TestClient) against a real Orthanc holding a
real CR chest radiograph, a CT and an RT plan in one study (``tests.support.viewer_pacs``):
what is listed, the file as stored, the size and instance limits, auth, and every failure as a
clear 4xx or 502/504. Nothing is mocked; the hung PACS is a real TCP endpoint that accepts and
never answers (``tests.support.tcp_faults``), the unreachable one a port nobody listens on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.support.app_settings import local_settings
from tests.support.net import free_port
from tests.support.scratch import scratch_dir
from tests.support.tcp_faults import SwitchableBroker
from tests.support.viewer_pacs import PacsStudy, orthanc_with_study

pytestmark = [pytest.mark.integration, pytest.mark.data]

TOKENS = {
    "look": ["predict"],
    "explainer": ["explain"],
    "jobs-only": ["jobs"],
}
LOOK = {"Authorization": "Bearer look"}
TIMEOUT_S = 1.0  # the hung PACS's test: one read timeout


@pytest.fixture(scope="module")
def study(
    request: pytest.FixtureRequest, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PacsStudy]:
    with (
        scratch_dir(request, tmp_path_factory, "pacs-routes") as root,
        orthanc_with_study(data_dir, root) as stored,
    ):
        yield stored


@pytest.fixture(scope="module")
def hung_pacs() -> Iterator[int]:
    with SwitchableBroker(mode="hung") as endpoint:
        yield endpoint.port


def make_client(root: Path, pacs: dict[str, str], **settings: object) -> TestClient:
    return TestClient(
        create_app(
            local_settings(
                root, api_tokens=TOKENS, pacs_dicomweb=pacs, pacs_timeout_s=TIMEOUT_S, **settings
            )
        )
    )


@pytest.fixture(scope="module")
def client(
    request: pytest.FixtureRequest,
    study: PacsStudy,
    hung_pacs: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    pacs = {
        "orthanc": study.orthanc.dicomweb_url,
        "hung": f"http://127.0.0.1:{hung_pacs}/dicom-web",
        "gone": f"http://127.0.0.1:{free_port()}/dicom-web",
    }
    with (
        scratch_dir(request, tmp_path_factory, "app") as root,
        make_client(root, pacs) as http,
    ):
        yield http


def instance_path(study: PacsStudy, name: str, pacs: str = "orthanc") -> str:
    stored = study.files[name]
    return (
        f"/pacs/{pacs}/studies/{study.study_instance_uid}/series/{stored.series_instance_uid}"
        f"/instances/{stored.sop_instance_uid}"
    )


def test_a_study_lists_its_instances_by_uid_modality_and_body_part_no_patient_value(
    client: TestClient, study: PacsStudy
) -> None:
    path = f"/pacs/orthanc/studies/{study.study_instance_uid}/instances"
    response = client.get(path, headers=LOOK)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["pacs"], body["study_instance_uid"]) == ("orthanc", study.study_instance_uid)
    assert body["truncated"] is False
    listed = {item["sop_instance_uid"]: item for item in body["instances"]}
    assert set(listed) == {f.sop_instance_uid for f in study.files.values()}
    for stored in study.files.values():
        item = listed[stored.sop_instance_uid]
        assert item["series_instance_uid"] == stored.series_instance_uid
        assert item["modality"] == stored.modality
        assert item["body_part_examined"] == stored.body_part
    radiograph = listed[study.files["RG1_UNCR.dcm"].sop_instance_uid]
    assert (radiograph["modality"], radiograph["body_part_examined"]) == ("CR", "CHEST")
    assert radiograph["skip_reason"] is None
    assert listed[study.files["rtplan.dcm"].sop_instance_uid]["skip_reason"] == (
        "not an image (modality RTPLAN)"
    )
    assert study.patient_name and study.patient_name not in response.text
    assert response.json() == client.get(path, headers={"Authorization": "Bearer explainer"}).json()


def test_an_instance_comes_back_byte_for_byte_as_stored(
    client: TestClient, study: PacsStudy
) -> None:
    for name in ("RG1_UNCR.dcm", "CT_small.dcm"):
        response = client.get(instance_path(study, name), headers=LOOK)

        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/dicom"
        assert response.headers["cache-control"] == "no-store"
        assert response.content == study.files[name].data


def test_a_file_over_max_upload_bytes_is_413_and_one_at_the_limit_passes(
    study: PacsStudy, tmp_path_factory: pytest.TempPathFactory
) -> None:
    size = len(study.files["RG1_UNCR.dcm"].data)
    pacs = {"orthanc": study.orthanc.dicomweb_url}
    with make_client(tmp_path_factory.mktemp("small"), pacs, max_upload_bytes=size - 1) as http:
        refused = http.get(instance_path(study, "RG1_UNCR.dcm"), headers=LOOK)
    with make_client(tmp_path_factory.mktemp("exact"), pacs, max_upload_bytes=size) as http:
        exact = http.get(instance_path(study, "RG1_UNCR.dcm"), headers=LOOK)

    assert refused.status_code == 413, refused.text
    assert f"larger than {size - 1} bytes" in refused.json()["detail"]
    assert "max_upload_bytes" in refused.json()["detail"]
    assert exact.status_code == 200, exact.text
    assert len(exact.content) == size


def test_a_study_over_pacs_max_instances_lists_the_first_and_says_so(
    study: PacsStudy, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pacs = {"orthanc": study.orthanc.dicomweb_url}
    path = f"/pacs/orthanc/studies/{study.study_instance_uid}/instances"
    with make_client(tmp_path_factory.mktemp("few"), pacs, pacs_max_instances=2) as http:
        cut = http.get(path, headers=LOOK).json()
    with make_client(tmp_path_factory.mktemp("all"), pacs, pacs_max_instances=3) as http:
        whole = http.get(path, headers=LOOK).json()

    assert (len(cut["instances"]), cut["truncated"]) == (2, True)
    assert (len(whole["instances"]), whole["truncated"]) == (3, False)
    assert {i["sop_instance_uid"] for i in cut["instances"]} < {
        i["sop_instance_uid"] for i in whole["instances"]
    }


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        ("study", "1.2.840.abc"),
        ("study", "1.2..3"),
        ("study", "1" * 65),
        ("series", "1.2.3/../4"),
        ("sop", "1.2.3 4"),
    ],
)
def test_a_uid_that_is_not_a_dicom_uid_is_422(
    client: TestClient, study: PacsStudy, where: str, bad: str
) -> None:
    stored = study.files["CT_small.dcm"]
    uids = {
        "study": study.study_instance_uid,
        "series": stored.series_instance_uid,
        "sop": stored.sop_instance_uid,
    }
    uids[where] = bad
    response = client.get(
        f"/pacs/orthanc/studies/{uids['study']}/series/{uids['series']}/instances/{uids['sop']}",
        headers=LOOK,
    )
    listing = client.get(f"/pacs/orthanc/studies/{uids['study']}/instances", headers=LOOK)

    assert response.status_code in (404, 422), response.text  # a "/" splits the path: no route
    if "/" not in bad:
        assert response.status_code == 422
        assert "is not a DICOM UID" in response.json()["detail"]
    if where == "study":
        assert listing.status_code == 422, listing.text


def test_unknown_pacs_study_and_instance_are_404(client: TestClient, study: PacsStudy) -> None:
    unknown = client.get(f"/pacs/nope/studies/{study.study_instance_uid}/instances", headers=LOOK)
    no_study = client.get("/pacs/orthanc/studies/1.2.3.4/instances", headers=LOOK)
    ct = study.files["CT_small.dcm"]
    no_instance = client.get(
        f"/pacs/orthanc/studies/{study.study_instance_uid}/series/{ct.series_instance_uid}"
        f"/instances/{ct.sop_instance_uid}.9",
        headers=LOOK,
    )

    assert unknown.status_code == 404, unknown.text
    assert "unknown PACS 'nope'; configured: gone, hung, orthanc" in unknown.json()["detail"]
    assert no_study.status_code == 404, no_study.text
    assert "holds no study 1.2.3.4" in no_study.json()["detail"]
    assert no_instance.status_code == 404, no_instance.text
    assert "HTTP 404" in no_instance.json()["detail"]


def test_an_unreachable_pacs_is_502_and_a_silent_one_504_within_its_timeout(
    client: TestClient, study: PacsStudy
) -> None:
    gone = client.get(instance_path(study, "CT_small.dcm", "gone"), headers=LOOK)
    gone_list = client.get(f"/pacs/gone/studies/{study.study_instance_uid}/instances", headers=LOOK)
    started = time.monotonic()
    silent = client.get(f"/pacs/hung/studies/{study.study_instance_uid}/instances", headers=LOOK)
    silent_file = client.get(instance_path(study, "CT_small.dcm", "hung"), headers=LOOK)
    waited = time.monotonic() - started

    for answer in (gone, gone_list):
        assert answer.status_code == 502, answer.text
        assert answer.json()["detail"].startswith("PACS 'gone': the PACS at http://127.0.0.1:")
        assert "is unreachable" in answer.json()["detail"]
    for answer in (silent, silent_file):
        assert answer.status_code == 504, answer.text
        assert "is unreachable" in answer.json()["detail"]
        assert "Timeout" in answer.json()["detail"]
    # two requests, one read timeout each and no retry (the DICOMweb client's own retries
    # would wait 5 timeouts + 15 s of back-off per request); 10 s of slack for a loaded machine
    assert waited < 2 * TIMEOUT_S + 10


def test_the_routes_need_a_token_that_may_analyse_images(
    client: TestClient, study: PacsStudy
) -> None:
    path = f"/pacs/orthanc/studies/{study.study_instance_uid}/instances"

    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    refused = client.get(path, headers={"Authorization": "Bearer jobs-only"})
    assert refused.status_code == 403, refused.text
    assert "neither the 'predict' nor the 'explain' scope" in refused.json()["detail"]
    file = instance_path(study, "CT_small.dcm")
    assert client.get(file, headers={"Authorization": "Bearer jobs-only"}).status_code == 403
    # the check comes before the PACS name: no configured name is told to a stranger
    assert client.get("/pacs/nope/studies/1.2/instances").status_code == 401
