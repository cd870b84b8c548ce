"""The DIMSE AI node as a real process: dcmtk's ``storescu`` pushes real DICOM files to it.

``python -m service.pacs.listener`` runs as a subprocess on a loopback port with its own state
folder (job database, embedded broker, spool). The first tests stop at the queue (no worker:
the job stays queued); the last runs what ``make run`` starts (API, worker, listener) and a real
Orthanc as the destination, and checks that Orthanc ends up holding our SR and SC in the
source's study.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from service.config import Settings
from service.jobs.repository import JobRepository
from service.pacs.results import build_secondary_capture
from tests.support.net import free_port
from tests.support.orthanc import Modality, Orthanc
from tests.support.scratch import scratch_dir
from training.dicom import dicom_to_image
from training.model_ref import ModelIdentity

REPO = Path(__file__).resolve().parents[2]
AE_TITLE = "MEDROBUST"
ALLOWED = "STORESCU"
START_TIMEOUT_S = 180
DROPPED = ("InstitutionName", "StationName", "OperatorsName", "OtherPatientIDsSequence")

pytestmark = pytest.mark.integration


def _storescu_missing() -> str | None:
    return None if shutil.which("storescu") else "dcmtk's storescu is not installed"


def storescu(
    port: int, *files: Path, calling: str = ALLOWED, called: str = AE_TITLE, extra: tuple = ()
) -> subprocess.CompletedProcess:
    command = ["storescu", *extra, "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run([*command, *map(str, files)], capture_output=True, text=True, timeout=120)


def clean_env(**settings: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("MEDROBUST_")
    }
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env.update(settings)
    return env


def listener_settings(
    root: Path, store_dir: Path, model: str, port: int, destination_port: int
) -> dict[str, str]:
    return {
        "MEDROBUST_STATE_DIR": str(root / "state"),
        "MEDROBUST_STORE_DIR": str(store_dir),
        "MEDROBUST_DATA_DIR": str(root),
        "MEDROBUST_DIMSE_AE_TITLE": AE_TITLE,
        "MEDROBUST_DIMSE_PORT": str(port),
        "MEDROBUST_DIMSE_ALLOWED_CALLING_AETS": json.dumps([ALLOWED, "ORTHANC"]),
        "MEDROBUST_DIMSE_DESTINATION_AE": "ORTHANC",
        "MEDROBUST_DIMSE_DESTINATION_PORT": str(destination_port),
        "MEDROBUST_DIMSE_MODEL": model,
    }


def wait_for(log: Path, pattern: str, process: subprocess.Popen, timeout_s: float) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(pattern, text)
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"the process exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in {timeout_s} s:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as handle:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def patient_values(*files: Path) -> set[str]:
    """Identifying values of the pushed files, none of which may appear in a log."""
    values = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "ReferringPhysicianName"):
            value = str(ds.get(keyword) or "").strip()
            if len(value) > 2:
                values.add(value)
    return values


@dataclass
class Node:
    process: subprocess.Popen
    port: int
    log: Path
    spool: Path
    settings: Settings


@pytest.fixture(scope="module")
def node(
    request: pytest.FixtureRequest,
    chest_store: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Node]:
    """The listener alone (no worker), queueing into its own SQLite + filesystem broker."""
    missing = _storescu_missing()
    if missing:
        pytest.skip(missing)
    store_dir, model = chest_store
    with scratch_dir(request, tmp_path_factory, "listener") as root:
        port = free_port()
        env = clean_env(**listener_settings(root, store_dir, model, port, free_port()))
        log = root / "listener.log"
        process = spawn([sys.executable, "-m", "service.pacs.listener"], env, log)
        try:
            wait_for(log, r"listening on 127\.0\.0\.1:\d+", process, START_TIMEOUT_S)
            settings = Settings(state_dir=root / "state")
            yield Node(process, port, log, settings.resolved_dimse_spool_dir, settings)
        finally:
            stop(process)


def _dicom(name: str) -> Path:
    return Path(get_testdata_file(name))


@pytest.mark.data
def test_storescu_push_is_spooled_reduced_and_queued(node: Node, data_dir: Path) -> None:
    chest = data_dir / "dicom_samples" / "RG1_UNCR.dcm"
    compressed = _dicom("MR_small_jp2klossless.dcm")  # JPEG 2000 lossless, offered as such
    before = node.log.read_text()
    pushed = storescu(node.port, chest, compressed, extra=("-xv",))
    assert pushed.returncode == 0, pushed.stderr

    queued = wait_for(
        node.log, r"queued job (\S+): 2 instance\(s\) from STORESCU", node.process, 60
    )
    repo = JobRepository(node.settings.resolved_database_url)
    try:
        job = repo.get(queued.group(1))
    finally:
        repo.dispose()
    assert job is not None and job.state.value == "queued"
    spooled = sorted(Path(f) for f in job.spec["files"])
    assert len(spooled) == 2 and all(p.is_relative_to(node.spool) for p in spooled)

    for original in (chest, compressed):
        source = pydicom.dcmread(original)
        copy = pydicom.dcmread(spooled[0].parent / f"{source.SOPInstanceUID}.dcm")
        if source.file_meta.TransferSyntaxUID.is_compressed:  # kept as it came, not decoded
            assert copy.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert copy.StudyInstanceUID == source.StudyInstanceUID
        assert copy.PatientID == source.PatientID  # the results must repeat it
        assert not [k for k in DROPPED if k in copy]
        assert not any(element.tag.is_private for element in copy)
        np.testing.assert_array_equal(dicom_to_image(copy), dicom_to_image(source))

    said = node.log.read_text()[len(before) :]
    assert not [v for v in patient_values(chest, compressed) if v in said], said


def test_calling_and_called_ae_titles_are_checked(node: Node) -> None:
    folders = set(node.spool.iterdir()) if node.spool.exists() else set()
    echo = ["echoscu", "-aec", AE_TITLE, "127.0.0.1", str(node.port)]
    allowed = subprocess.run([*echo, "-aet", ALLOWED], capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr  # C-ECHO, how a PACS admin tests a node

    refused = storescu(node.port, _dicom("CT_small.dcm"), calling="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    wait_for(node.log, r"association from 'INTRUDER'@127\.0\.0\.1 rejected", node.process, 30)

    wrong_called = storescu(node.port, _dicom("CT_small.dcm"), called="SOMEONE_ELSE")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
    assert (set(node.spool.iterdir()) if node.spool.exists() else set()) == folders


def test_sop_instance_uid_that_is_not_a_uid_is_refused(node: Node) -> None:
    """The SOP Instance UID names the spooled file: a sender cannot write outside the spool."""
    from pynetdicom import AE as ClientAE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    ds = pydicom.dcmread(_dicom("CT_small.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "../../escaped"
    folders = set(node.spool.iterdir()) if node.spool.exists() else set()
    client = ClientAE(ae_title=ALLOWED)
    client.add_requested_context(SecondaryCaptureImageStorage, ds.file_meta.TransferSyntaxUID)
    association = client.associate("127.0.0.1", node.port, ae_title=AE_TITLE)
    assert association.is_established
    try:
        status = association.send_c_store(ds)
    finally:
        association.release()
    assert status.Status == 0xC000
    assert not list(node.spool.parent.rglob("escaped*"))
    assert (set(node.spool.iterdir()) if node.spool.exists() else set()) == folders


def test_our_own_results_sent_back_are_ignored(node: Node, tmp_path: Path) -> None:
    """A PACS routing everything to the node must not make it analyse its own overlays."""
    source = pydicom.dcmread(_dicom("CT_small.dcm"))
    overlay = np.zeros((int(source.Rows), int(source.Columns), 3), np.uint8)
    ours = build_secondary_capture(
        source, overlay, ModelIdentity(name="chest", version=1, weights_sha256="0" * 64)
    )
    ours.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    folders = set(node.spool.iterdir()) if node.spool.exists() else set()
    assert storescu(node.port, tmp_path / "sc.dcm").returncode == 0
    wait_for(node.log, r"our own result object, ignored", node.process, 30)
    assert (set(node.spool.iterdir()) if node.spool.exists() else set()) == folders


def test_listener_refuses_to_start_without_an_allow_list(
    chest_store: tuple[Path, str], tmp_path: Path
) -> None:
    store_dir, model = chest_store
    settings = listener_settings(tmp_path, store_dir, model, free_port(), free_port())
    settings["MEDROBUST_DIMSE_ALLOWED_CALLING_AETS"] = "[]"
    run = subprocess.run(
        [sys.executable, "-m", "service.pacs.listener"],
        cwd=REPO,
        env=clean_env(**settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert "MEDROBUST_DIMSE_ALLOWED_CALLING_AETS is empty" in run.stderr


@pytest.mark.slow
@pytest.mark.data
def test_make_run_node_sends_sr_and_sc_to_orthanc(
    orthanc: Orthanc, chest_store: tuple[Path, str], tmp_path: Path, data_dir: Path
) -> None:
    """storescu → listener → job → worker → C-STORE → Orthanc holds SR + SC in the study.

    Started as ``make run`` starts it (``python -m service`` with ``MEDROBUST_DIMSE_ENABLED``).
    Then Orthanc itself routes the image to the node, and the re-run leaves one SR and one SC.
    """
    store_dir, model = chest_store
    port = free_port()
    settings = listener_settings(tmp_path, store_dir, model, port, orthanc.dicom_port)
    env = clean_env(
        **settings,
        MEDROBUST_DIMSE_ENABLED="true",
        MEDROBUST_HOST="127.0.0.1",
    )
    log = tmp_path / "service.log"
    # what `make run` runs, less the API (it plays no part here and the CPUs are few); a grace
    # shorter than stop()'s wait, so the supervisor escalates to SIGKILL on its children itself
    service = spawn([sys.executable, "-m", "service", "--no-api", "--grace", "10"], env, log)
    chest = data_dir / "dicom_samples" / "RG1_UNCR.dcm"
    source = pydicom.dcmread(chest, stop_before_pixels=True)
    try:
        wait_for(log, r"listening on 127\.0\.0\.1", service, START_TIMEOUT_S)
        wait_for(log, r"\[medrobust worker\] ready", service, START_TIMEOUT_S)
        pushed = storescu(port, chest)
        assert pushed.returncode == 0, pushed.stderr
        job_id = wait_for(log, r"queued job (\S+): 1 instance", service, 60).group(1)

        deadline = time.monotonic() + 300
        classes: dict[str, dict] = {}
        while time.monotonic() < deadline and len(classes) < 2:
            classes = {
                orthanc.get(f"/instances/{i['ID']}/simplified-tags")["SOPClassUID"]: i
                for i in orthanc.study_instances(source.StudyInstanceUID)
            }
            assert service.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        assert set(classes) == {
            "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
            "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        }, f"job {job_id}\n{log.read_text()[-4000:]}\n{orthanc.log_tail()}"

        studies = orthanc.get("/studies")
        assert len(studies) == 1  # both in the source's study, nothing else stored
        series = {i["ParentSeries"] for i in classes.values()}
        assert len(series) == 2
        sr_id = classes["1.2.840.10008.5.1.4.1.1.88.33"]["ID"]
        sr = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_orthanc_file(orthanc, sr_id)))
        manifest_sha = json.loads(
            next(store_dir.glob(f"{model.partition(':')[0]}/*/manifest.json")).read_text()
        )["weights_sha256"]
        assert f"weights_sha256={manifest_sha}" in _texts(sr)

        spool = Settings(state_dir=tmp_path / "state").resolved_dimse_spool_dir
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and list(spool.rglob("*.dcm")):
            time.sleep(0.5)
        assert not list(spool.rglob("*.dcm")), "the job left spooled patient data behind"

        # the PACS routes the image to the node itself (Orthanc's "send to modality"); the same
        # model on the same image gives the same UIDs, so Orthanc still holds one SR and one SC
        orthanc.put_modality("medrobust", Modality(AE_TITLE, "127.0.0.1", port))
        stored = orthanc.upload(chest)
        routed = httpx.post(
            f"{orthanc.url}/modalities/medrobust/store",
            json={"Resources": [stored["ID"]], "Synchronous": True},
            timeout=120,
        )
        assert routed.status_code == 200, routed.text
        again = wait_for(log, r"queued job (\S+): 1 instance\(s\) from ORTHANC", service, 60)
        assert job_state(tmp_path / "state", again.group(1), service) == "succeeded"
        assert len(orthanc.study_instances(source.StudyInstanceUID)) == 3  # source, SR, SC
    finally:
        stop(service)
    said = log.read_text(errors="replace")
    assert not [v for v in patient_values(chest) if v in said]


def job_state(state_dir: Path, job_id: str, process: subprocess.Popen) -> str:
    """The job's state once it has ended (or after 300 s)."""
    repo = JobRepository(Settings(state_dir=state_dir).resolved_database_url)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            job = repo.get(job_id)
            if job is not None and job.state.value in ("succeeded", "failed", "cancelled"):
                return job.state.value
            time.sleep(0.5)
        job = repo.get(job_id)
        return job.state.value if job else "missing"
    finally:
        repo.dispose()


def _orthanc_file(orthanc: Orthanc, instance_id: str) -> bytes:
    response = httpx.get(f"{orthanc.url}/instances/{instance_id}/file", timeout=30)
    response.raise_for_status()
    return response.content


def _texts(ds: pydicom.Dataset) -> list[str]:
    """Every TEXT value of an SR content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            found.append(str(item.TextValue))
        found += _texts(item)
    return found
