"""PACS jobs end to end: a real uvicorn API and Celery worker (embedded broker) and a real Orthanc.

- ``POST /jobs/pacs-study``: the worker runs the DICOMweb round trip on a study pushed into
  Orthanc with ``storescu``; Orthanc ends up holding the SR and SC; bad submissions get 422;
  a PACS that does not answer and a study it does not hold fail the job with the reason.
- ``submit_dimse_job`` (what the DIMSE listener calls): spooled files are analysed by the worker,
  the SR + SC are C-STOREd to Orthanc, and the spooled files are deleted.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from test_results_dicom import dciodvfy

from service.config import Settings
from service.pacs.results import TRUST_SCHEME
from service.pacs.submit import submit_dimse_job
from tests.support.chest import save_chest_model
from tests.support.jobs_stack import TOKEN, Stack, running_stack
from tests.support.net import free_port
from tests.support.orthanc import Orthanc, running_orthanc
from tests.support.scratch import scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.data, pytest.mark.slow]


@dataclass
class PacsStack:
    stack: Stack
    orthanc: Orthanc
    model: str  # the tiny chest model's ref in the stack's store
    study_uid: str  # pushed into Orthanc with storescu: CR chest + CT + RT plan

    def settings(self, **overrides: Any) -> Settings:
        """What the DIMSE listener beside the stack reads: the same state, store, destination."""
        return Settings(
            **overrides,
            state_dir=self.stack.root / "state",
            store_dir=self.stack.root / "models",
            dimse_destination_ae=self.orthanc.aet,
            dimse_destination_host=self.orthanc.host,
            dimse_destination_port=self.orthanc.dicom_port,
            dimse_model=self.model,
        )


@pytest.fixture(scope="module")
def pacs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pacs_tools: None,
    chest_study_files: Any,
    tiny_chest_model: Any,
) -> Iterator[PacsStack]:
    with (
        scratch_dir(request, tmp_path_factory, "pacs-jobs") as root,
        running_orthanc(root / "orthanc") as orthanc,
    ):
        study_uid, files = chest_study_files(root / "study")
        orthanc.storescu(*files, calling_aet="MODALITY")
        model = tiny_chest_model(root / "models")
        settings = {
            "MEDROBUST_PACS_DICOMWEB": json.dumps(
                {
                    "orthanc": orthanc.dicomweb_url,
                    "down": f"http://127.0.0.1:{free_port()}/dicom-web",  # nothing listens
                }
            ),
            "MEDROBUST_PACS_TIMEOUT_S": "5",
            # robustness blocks (test_a_study_job_records_robustness_in_the_sr) kept small: the
            # tiny model's flip search stops at these limits, whatever it has found by then
            "MEDROBUST_TRUST_MAX_STEPS": "3",
            "MEDROBUST_TRUST_MAX_MODEL_CALLS": "40",
            # and the certificate of test_a_certified_prediction_reaches_the_sr: 20 + 200 samples
            "MEDROBUST_TRUST_MAX_N0": "20",
            "MEDROBUST_TRUST_MAX_N": "200",
        }
        with running_stack(root, None, settings) as stack:
            yield PacsStack(stack, orthanc, model, study_uid)


def submit(pacs: PacsStack, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    with pacs.stack.client() as client:
        return client.post("/jobs/pacs-study", json=body, headers=headers)


def test_a_study_job_stores_the_sr_and_sc_in_orthanc(pacs: PacsStack) -> None:
    body = {"pacs": "orthanc", "study_uid": pacs.study_uid, "model": "chest-tiny"}
    response = submit(pacs, body, key="study-1")
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    again = submit(pacs, body, key="study-1")
    assert (again.status_code, again.json()["job_id"]) == (200, job_id)

    job = pacs.stack.wait_job(job_id, timeout_s=300)

    assert job["state"] == "succeeded", f"{job}\n{pacs.stack.logs()}"
    assert job["kind"] == "pacs_study" and job["progress"] == 100.0
    assert job["spec"]["model"] == pacs.model  # pinned to its version on submission
    result = job["result"]
    manifest = json.loads(
        (pacs.stack.root / "models" / "chest-tiny" / "1" / "manifest.json").read_text()
    )
    assert result["model"] == {
        "name": "chest-tiny",
        "version": 1,
        "weights_sha256": manifest["weights_sha256"],
        "architecture": "baseline",
        "attention_variant": None,
        "defense": None,
    }
    assert (result["pacs"], result["study_instance_uid"]) == ("orthanc", pacs.study_uid)
    assert (result["seen"], result["analysed"], result["skipped"]) == (3, 1, 2)
    reasons = {i["modality"]: i["reason"] for i in result["instances"]}
    assert reasons["CR"] is None and "Modality is CT" in reasons["CT"]
    assert "not an image" in reasons["RTPLAN"]
    stored = {s["sop_instance_uid"] for s in result["stored"]}
    held = {
        i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.orthanc.study_instances(pacs.study_uid)
    }
    assert len(stored) == 2 and stored <= held
    with pacs.stack.client() as client:
        listed = client.get("/jobs", params={"kind": "pacs_study"}).json()
    assert job_id in {j["id"] for j in listed["jobs"]}


def _stored_sr(orthanc: Orthanc, study_uid: str, sop_uid: str) -> Dataset:
    """The SR Orthanc holds under ``sop_uid``, as a dataset (REST ``/instances/{id}/file``)."""
    (found,) = [
        i
        for i in orthanc.study_instances(study_uid)
        if i["MainDicomTags"]["SOPInstanceUID"] == sop_uid
    ]
    response = httpx.get(f"{orthanc.url}/instances/{found['ID']}/file", timeout=30)
    response.raise_for_status()
    return dcmread(io.BytesIO(response.content))


def _numbers(sr: Dataset) -> dict[str, list[float]]:
    """Robustness NUM items of an SR: concept code → values, in content order."""
    numbers: dict[str, list[float]] = {}

    def walk(items: Any) -> None:
        for item in items:
            concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            if item.ValueType == "NUM" and concept.CodingSchemeDesignator == TRUST_SCHEME:
                value = float(item.MeasuredValueSequence[0].NumericValue)
                numbers.setdefault(concept.CodeValue, []).append(value)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return numbers


def test_a_study_job_records_robustness_in_the_sr(pacs: PacsStack) -> None:
    # all = flip + certify; the tiny model was trained without noise, so certify is skipped
    # with the reason (a job has nobody to answer 422 to) and the flip bracket is recorded
    body = {
        "pacs": "orthanc",
        "study_uid": pacs.study_uid,
        "model": "chest-tiny",
        "robustness": "all",
    }
    response = submit(pacs, body)
    assert response.status_code == 202, response.text
    job = pacs.stack.wait_job(response.json()["job_id"], timeout_s=600)

    assert job["state"] == "succeeded", f"{job}\n{pacs.stack.logs()}"
    result = job["result"]
    assert result["robustness"] == "all"
    assert "trained without Gaussian noise" in result["robustness_skipped"]
    (cr,) = [i for i in result["instances"] if i["status"] == "analysed"]
    block = cr["robustness"]
    assert block["certified"] is None and set(block["flip"]) == {"linf", "l2"}
    for bound in block["flip"].values():
        assert bound["steps"] <= 3 and bound["model_calls"] <= 40 + 1  # + the verifying re-run

    (sr_uid,) = [s["sop_instance_uid"] for s in cr["stored"] if s["kind"] == "sr"]
    numbers = _numbers(_stored_sr(pacs.orthanc, pacs.study_uid, sr_uid))
    flips = [block["flip"]["linf"], block["flip"]["l2"]]
    assert numbers["flip-lower"] == pytest.approx([b["lower"] for b in flips])
    verified = [b["upper"] for b in flips if b["verified"]]
    assert numbers.get("flip-upper", []) == pytest.approx(verified)
    assert "cert-radius" not in numbers


def test_a_certified_prediction_reaches_the_sr(pacs: PacsStack, tmp_path: Path) -> None:
    # A model whose recipe records Gaussian noise σ = 16 certifies at that σ in a job, and the
    # SR carries the certificate as NUM items: radius and p̲_A, with the smoothed class.
    ref = save_chest_model(
        pacs.stack.root / "models",
        "chest-noisy",
        ("no_finding", "pneumothorax"),
        seed=0,
        noise_sigma=16.0,
    )
    body = {
        "pacs": "orthanc",
        "study_uid": pacs.study_uid,
        "model": ref,
        "robustness": "certify",
    }
    response = submit(pacs, body)
    assert response.status_code == 202, response.text
    job = pacs.stack.wait_job(response.json()["job_id"], timeout_s=600)

    assert job["state"] == "succeeded", f"{job}\n{pacs.stack.logs()}"
    result = job["result"]
    assert (result["robustness"], result["robustness_skipped"]) == ("certify", None)
    (cr,) = [i for i in result["instances"] if i["status"] == "analysed"]
    certified = cr["robustness"]["certified"]
    assert cr["robustness"]["flip"] is None
    assert (certified["sigma"], certified["n0"], certified["n"]) == (16.0, 20, 200)

    (sr_uid,) = [s["sop_instance_uid"] for s in cr["stored"] if s["kind"] == "sr"]
    sr = _stored_sr(pacs.orthanc, pacs.study_uid, sr_uid)
    numbers = _numbers(sr)
    assert numbers["cert-radius"] == pytest.approx([certified["radius"]])
    assert numbers["cert-p-lower"] == pytest.approx([certified["p_lower"]])
    assert "flip-lower" not in numbers
    if shutil.which("dciodvfy") is not None:  # Debian's dicom3tools, installed by make test
        path = tmp_path / "certified-sr.dcm"
        sr.save_as(path)
        assert not dciodvfy(path).errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pacs": "elsewhere"}, "unknown PACS 'elsewhere'; configured: down, orthanc"),
        ({"pacs": "orthanc", "url": "http://169.254.169.254/"}, "Extra inputs"),
        ({"study_uid": "1.2.abc"}, "study_uid"),
        ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"method": "lime"}, "method"),
        ({"robustness": "everything"}, "robustness"),
    ],
)
def test_bad_study_submissions_are_refused(
    pacs: PacsStack, change: dict[str, Any], message: str
) -> None:
    body = {"pacs": "orthanc", "study_uid": "1.2.3", "model": "chest-tiny", **change}
    response = submit(pacs, body)
    assert response.status_code == 422, response.text
    assert message in response.text


def test_an_unreachable_pacs_or_unknown_study_fails_the_job_with_the_reason(
    pacs: PacsStack,
) -> None:
    down = submit(pacs, {"pacs": "down", "study_uid": "1.2.3", "model": "chest-tiny"})
    missing = submit(pacs, {"pacs": "orthanc", "study_uid": "1.2.3.4.5", "model": "chest-tiny"})
    assert down.status_code == missing.status_code == 202

    job = pacs.stack.wait_job(down.json()["job_id"], timeout_s=120)
    assert job["state"] == "failed" and "is unreachable" in job["error"], job
    job = pacs.stack.wait_job(missing.json()["job_id"], timeout_s=120)
    assert job["state"] == "failed" and "holds no study 1.2.3.4.5" in job["error"], job


def test_cli_submit_waits_for_the_job(pacs: PacsStack) -> None:
    command = [
        *(sys.executable, "-m", "service.pacs.cli", "submit", "--api", pacs.stack.url),
        *("--token", TOKEN, "--pacs", "orthanc", "--study", pacs.study_uid),
        *("--model", "chest-tiny", "--wait"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "succeeded" and job["result"]["analysed"] == 1


def test_a_dimse_job_sends_the_results_and_deletes_the_spooled_files(
    pacs: PacsStack, data_dir: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    radiograph = data_dir / "dicom_samples" / "RG1_UNCR.dcm"
    files = [spool / "cr.dcm", spool / "ct.dcm"]
    shutil.copy(radiograph, files[0])
    shutil.copy(get_testdata_file("CT_small.dcm"), files[1])
    study_uid = str(dcmread(get_testdata_file("CT_small.dcm")).StudyInstanceUID)
    before = len(pacs.orthanc.study_instances(study_uid))

    job_id = submit_dimse_job(pacs.settings(), files, calling_aet="MODALITY")
    job = pacs.stack.wait_job(job_id, timeout_s=300)

    assert job["state"] == "succeeded", f"{job}\n{pacs.stack.logs()}"
    result = job["result"]
    assert job["kind"] == "pacs_dimse" and result["source_aet"] == "MODALITY"
    orthanc = pacs.orthanc
    assert result["destination"] == f"{orthanc.aet}@{orthanc.host}:{orthanc.dicom_port}"
    assert (result["seen"], result["analysed"], result["skipped"]) == (2, 1, 1)
    assert result["model"]["name"] == "chest-tiny" and len(result["model"]["weights_sha256"]) == 64
    # the CR's results reached Orthanc by C-STORE, in the radiograph's study
    source_study = str(dcmread(radiograph, stop_before_pixels=True).StudyInstanceUID)
    held = {
        i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.orthanc.study_instances(source_study)
    }
    assert {s["sop_instance_uid"] for s in result["stored"]} <= held
    assert len(pacs.orthanc.study_instances(study_uid)) == before  # nothing for the CT
    assert not spool.exists()  # patient data does not linger: files and their folder are gone


def test_a_dimse_job_records_the_configured_robustness(
    pacs: PacsStack, data_dir: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    radiograph = data_dir / "dicom_samples" / "RG1_UNCR.dcm"
    shutil.copy(radiograph, spool / "cr.dcm")  # deleted when the job ends

    settings = pacs.settings(dimse_robustness="flip")
    job = pacs.stack.wait_job(submit_dimse_job(settings, [spool / "cr.dcm"]), timeout_s=600)

    assert job["state"] == "succeeded", f"{job}\n{pacs.stack.logs()}"
    assert job["spec"]["robustness"] == "flip"
    result = job["result"]
    assert (result["robustness"], result["robustness_skipped"]) == ("flip", None)
    (cr,) = result["instances"]
    assert set(cr["robustness"]["flip"]) == {"linf", "l2"} and cr["robustness"]["certified"] is None
    (sr_uid,) = [s["sop_instance_uid"] for s in cr["stored"] if s["kind"] == "sr"]
    study_uid = str(dcmread(radiograph, stop_before_pixels=True).StudyInstanceUID)
    lower = [b["lower"] for b in cr["robustness"]["flip"].values()]
    assert _numbers(_stored_sr(pacs.orthanc, study_uid, sr_uid))["flip-lower"] == pytest.approx(
        lower
    )
