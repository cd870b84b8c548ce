"""The DICOMweb round trip against a real Orthanc: QIDO, WADO, the model, STOW of the SR + SC.

The study is pushed with dcmtk's ``storescu``, as a modality would: the real CR chest radiograph
``RG1_UNCR.dcm`` (pydicom-data, from MEDROBUST_DATA_DIR) plus pydicom's ``CT_small.dcm`` (a CT:
the chest model does not accept it) and ``rtplan.dcm`` (no image at all), both moved into the
radiograph's study and patient. A JPEG 2000 MR (pydicom's) checks that a compressed image
travels as stored and is decoded. The model is a tiny untrained one: this checks the plumbing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread

from service.pacs.dicomweb import (
    PacsError,
    StudyNotFoundError,
    StudySummary,
    analyze_study,
    dicomweb_client,
)
from tests.support.net import free_port
from tests.support.orthanc import Orthanc

pytestmark = [pytest.mark.integration, pytest.mark.data, pytest.mark.slow]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def content_items(dataset: Dataset) -> Iterator[Dataset]:
    """Every item of an SR content tree, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or [None]
    return str(names[0].CodeMeaning) if names[0] is not None else ""


@pytest.fixture
def chest_study(
    orthanc: Orthanc, chest_study_files: Callable[[Path], tuple[str, list[Path]]], tmp_path: Path
) -> str:
    study_uid, files = chest_study_files(tmp_path / "study")
    orthanc.storescu(*files, calling_aet="MODALITY")
    assert len(orthanc.study_instances(study_uid)) == 3
    return study_uid


@pytest.fixture(scope="module")
def chest_model(chest_store: tuple[Path, str]) -> Any:
    from training.model_ref import ModelRef
    from training.store import ModelStore

    store_dir, ref = chest_store
    parsed = ModelRef.parse(ref)
    return ModelStore(store_dir).load(parsed.name, parsed.selector)


def orthanc_file(orthanc: Orthanc, instance_id: str) -> Dataset:
    from io import BytesIO

    response = httpx.get(f"{orthanc.url}/instances/{instance_id}/file", timeout=30)
    response.raise_for_status()
    return dcmread(BytesIO(response.content))


def test_round_trip_stores_sr_and_sc_in_the_study(
    orthanc: Orthanc, chest_study: str, chest_model: Any
) -> None:
    manifest = chest_model.manifest
    client = dicomweb_client(orthanc.dicomweb_url)
    progress: list[tuple[int, int]] = []

    summary = analyze_study(
        client, chest_study, chest_model, "gradcam", progress=lambda *p: progress.append(p)
    )

    assert (summary.seen, summary.analysed, summary.skipped) == (3, 1, 2)
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert summary.model.model_dump() == {
        "name": manifest.name,
        "version": manifest.version,
        "weights_sha256": manifest.weights_sha256,
        "architecture": "baseline",
        "attention_variant": None,
        "defense": None,
    }
    by_modality = {o.modality: o for o in summary.instances}
    assert by_modality["CR"].status == "analysed"
    assert by_modality["CT"].status == "skipped"
    assert "accepts CR/DX, CHEST" in by_modality["CT"].reason
    assert "Modality is CT" in by_modality["CT"].reason
    assert by_modality["RTPLAN"].status == "skipped"
    assert "not an image" in by_modality["RTPLAN"].reason
    assert sorted(s.kind for s in summary.stored) == ["sc", "sr"]
    assert StudySummary.model_validate_json(summary.model_dump_json()) == summary

    # Orthanc now holds the SR and the SC in the study, each in a new series of its own
    instances = orthanc.study_instances(chest_study)
    assert len(instances) == 5
    source = by_modality["CR"]
    stored = {s.kind: s for s in summary.stored}
    found = {i["MainDicomTags"]["SOPInstanceUID"]: i for i in instances}
    series = {s.series_instance_uid for s in summary.stored}
    assert len(series) == 2 and source.series_instance_uid not in series
    sr = orthanc_file(orthanc, found[stored["sr"].sop_instance_uid]["ID"])
    sc = orthanc_file(orthanc, found[stored["sc"].sop_instance_uid]["ID"])
    assert (sr.SOPClassUID, sc.SOPClassUID) == (COMPREHENSIVE_SR, SECONDARY_CAPTURE)
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == chest_study
    # the same patient, so Orthanc files them under the source's study, not a new patient's
    source_id = found[source.sop_instance_uid]["ID"]
    source_tags = orthanc.get(f"/instances/{source_id}/simplified-tags")
    assert sr.PatientID == sc.PatientID == source_tags["PatientID"] != ""
    assert len(orthanc.get("/studies")) == 1
    assert sc.PhotometricInterpretation == "RGB" and "DERIVED" in sc.ImageType

    # the SR names the model, its version and its weights' sha256, and references the source
    items = list(content_items(sr))
    texts = {concept(i): str(i.get("TextValue", "")) for i in items if "TextValue" in i}
    assert texts["Algorithm Name"] == manifest.name
    assert texts["Algorithm Version"] == str(manifest.version)
    assert any(manifest.weights_sha256 in str(i.get("TextValue", "")) for i in items)
    referenced = {
        str(ref.ReferencedSOPInstanceUID)
        for item in items
        for ref in item.get("ReferencedSOPSequence", [])
    }
    assert source.sop_instance_uid in referenced

    # and QIDO-RS (what a viewer asks) lists the two new series
    response = httpx.get(
        f"{orthanc.dicomweb_url}/studies/{chest_study}/series",
        headers={"Accept": "application/dicom+json"},
    )
    modalities = sorted(s["00080060"]["Value"][0] for s in response.json())
    assert modalities == ["CR", "CT", "OT", "RTPLAN", "SR"]


def test_a_second_run_is_idempotent(orthanc: Orthanc, chest_study: str, chest_model: Any) -> None:
    client = dicomweb_client(orthanc.dicomweb_url)
    first = analyze_study(client, chest_study, chest_model)
    second = analyze_study(client, chest_study, chest_model)

    # the same result objects (same UIDs), and Orthanc keeps one copy of each
    assert second.stored == first.stored
    assert len(orthanc.study_instances(chest_study)) == 5
    # the second run saw our SR and SC and skipped them as not source images
    assert (second.seen, second.analysed, second.skipped) == (5, 1, 4)
    ours = {s.sop_instance_uid for s in first.stored}
    reasons = {o.sop_instance_uid: o.reason for o in second.instances if o.sop_instance_uid in ours}
    assert len(reasons) == 2 and all(reasons.values())


def test_allowing_a_modality_mismatch_analyses_the_ct_too(
    orthanc: Orthanc, chest_study: str, chest_model: Any
) -> None:
    client = dicomweb_client(orthanc.dicomweb_url)
    summary = analyze_study(client, chest_study, chest_model, check_modality=False)
    assert (summary.seen, summary.analysed, summary.skipped) == (3, 2, 1)
    assert {o.modality for o in summary.instances if o.status == "analysed"} == {"CR", "CT"}
    assert len(orthanc.study_instances(chest_study)) == 7


def test_a_compressed_image_is_retrieved_as_stored_and_analysed(
    orthanc: Orthanc, chest_model: Any
) -> None:
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("MR_small_jp2klossless.dcm"))  # JPEG 2000 lossless
    orthanc.upload(path)
    study_uid = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)

    client = dicomweb_client(orthanc.dicomweb_url)
    summary = analyze_study(client, study_uid, chest_model, check_modality=False)

    assert (summary.seen, summary.analysed) == (1, 1), summary.instances
    assert len(orthanc.study_instances(study_uid)) == 3


def test_unknown_study_and_unreachable_pacs_are_clear_errors(
    orthanc: Orthanc, chest_model: Any
) -> None:
    with pytest.raises(StudyNotFoundError, match=r"holds no study 1\.2\.3\.4"):
        analyze_study(dicomweb_client(orthanc.dicomweb_url), "1.2.3.4", chest_model)
    nowhere = dicomweb_client(f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=3)
    with pytest.raises(PacsError, match="is unreachable"):
        analyze_study(nowhere, "1.2.3.4", chest_model)


def test_cli_analyze_study_prints_the_summary(
    orthanc: Orthanc, chest_study: str, chest_store: tuple[Path, str]
) -> None:
    store_dir, ref = chest_store
    command = [
        sys.executable,
        "-m",
        "service.pacs.cli",
        "analyze-study",
        "--pacs",
        orthanc.dicomweb_url,
        "--study",
        chest_study,
        "--model",
        ref,
        "--store",
        str(store_dir),
    ]
    # the chest model has no validation split to gate OpenVINO on: served by Keras, and said so
    done = subprocess.run(
        [*command, "--runtime", "openvino"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    summary = StudySummary.model_validate({k: printed[k] for k in StudySummary.model_fields})
    assert (summary.seen, summary.analysed, summary.skipped) == (3, 1, 2)
    assert "3/3 instance(s)" in done.stderr
    assert (printed["runtime"], printed["runtime_requested"]) == ("keras", "openvino")
    assert printed["runtime_artefact_sha256"] is None  # Keras runs the stored weights
    keras_only = subprocess.run(
        [*command, "--runtime", "keras"], capture_output=True, text=True, timeout=300
    )
    assert keras_only.returncode == 0, keras_only.stderr
    assert json.loads(keras_only.stdout)["runtime"] == "keras"
    assert "runtime_requested" not in json.loads(keras_only.stdout)

    missing = subprocess.run(
        [*command[:7], "1.2.3.4", *command[8:]], capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 1 and "holds no study 1.2.3.4" in missing.stderr
