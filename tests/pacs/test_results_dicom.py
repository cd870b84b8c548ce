"""The SR and Secondary Capture we write, checked by a real validator (dicom3tools' ``dciodvfy``).

Sources are real files nobody here wrote: the NEMA CR chest radiograph ``RG1_UNCR.dcm`` (from
``MEDROBUST_DATA_DIR``), pydicom's ``CT_small.dcm``, pydicom-data's RGB ultrasound ``US1_UNCR.dcm``
and pydicom's multi-frame YBR ultrasound ``examples_ybr_color.dcm``.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from service.pacs.results import (
    NOT_FOR_DIAGNOSIS,
    TRUST_SCHEME,
    Finding,
    build_secondary_capture,
    build_structured_report,
)
from training.dicom import DicomInputError
from training.model_ref import ModelIdentity
from training.trust.answer import CertifiedBound, FlipBound, RobustnessBlock

MODEL = ModelIdentity(name="chest", version=3, weights_sha256="0123456789abcdef" * 4)
FINDING = Finding("effusion", 0.625, {"normal": 0.25, "effusion": 0.625, "nodule": 0.125})
#: values a result must never repeat from its source (identifying, and not needed by DICOM)
NOT_COPIED = (
    "InstitutionName",
    "StationName",
    "OtherPatientIDsSequence",
    "PatientAge",
    "PatientWeight",
    "AdditionalPatientHistory",
    "StudyDescription",
    "ImageComments",
)


@dataclass(frozen=True)
class Validation:
    errors: list[str]
    warnings: list[str]
    output: str


def dciodvfy(path: Path) -> Validation:
    """Run ``dciodvfy`` on a file; its findings are lines starting ``Error`` / ``Warning``."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    lines = [line.strip() for line in output.splitlines()]
    return Validation(
        errors=[line for line in lines if re.match(r"^Error\b", line)],
        warnings=[line for line in lines if re.match(r"^Warning\b", line)],
        output=output,
    )


@pytest.fixture(scope="module")
def validator() -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")


def _pydicom_file(name: str) -> Path:
    return Path(get_testdata_file(name))


@pytest.fixture(
    params=[
        pytest.param("RG1_UNCR.dcm", marks=pytest.mark.data, id="CR-chest-RG1"),
        pytest.param("CT_small.dcm", id="CT-small"),
        pytest.param("US1_UNCR.dcm", id="US-rgb-US1"),
        pytest.param("examples_ybr_color.dcm", id="US-multiframe-ybr"),
    ]
)
def source(request: pytest.FixtureRequest) -> Dataset:
    if request.param == "RG1_UNCR.dcm":
        path = request.getfixturevalue("data_dir") / "dicom_samples" / "RG1_UNCR.dcm"
    else:
        path = _pydicom_file(request.param)
    return pydicom.dcmread(path)


def overlay_for(source: Dataset) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (int(source.Rows) // 4, int(source.Columns) // 4, 3), np.uint8)


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_sr_and_sc_pass_dciodvfy(source: Dataset, validator: None, tmp_path: Path) -> None:
    sr = build_structured_report(source, FINDING, MODEL)
    sc = build_secondary_capture(source, overlay_for(source), MODEL, layer="conv5_block3_out")
    for name, ds in (("sr", sr), ("sc", sc)):
        result = dciodvfy(write(ds, tmp_path / f"{name}.dcm"))
        assert not result.errors, f"{name}: {result.output}"


def test_sr_names_the_finding_the_model_and_the_source(source: Dataset, tmp_path: Path) -> None:
    sr = pydicom.dcmread(write(build_structured_report(source, FINDING, MODEL), tmp_path / "sr"))
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.PatientID == source.PatientID and sr.PatientID
    assert sr.PatientName == source.PatientName
    assert sr.StudyDate == source.StudyDate
    assert "NOT FOR DIAGNOSIS" in sr.SeriesDescription

    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    items = list(_content_items(sr))
    texts = [item.TextValue for item in items if item.ValueType == "TEXT"]
    assert "chest" in texts and "3" in texts  # algorithm name and version
    assert f"weights_sha256={MODEL.weights_sha256}" in texts
    comment = next(text for text in texts if text.startswith("Predicted class"))
    assert "effusion" in comment and MODEL.weights_sha256 in comment
    assert NOT_FOR_DIAGNOSIS in comment

    probabilities = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in items
        if item.ValueType == "NUM"
    ]
    assert probabilities == [0.625, 0.25, 0.125]  # every class, most probable first
    classified = [
        item.ConceptCodeSequence[0].CodeMeaning
        for item in items
        if item.ValueType == "CODE"
        and item.ConceptNameCodeSequence[0].CodeValue == "278201002"  # SCT Classification
    ]
    assert classified == ["effusion"]
    images = [item for item in items if item.ValueType == "IMAGE"]
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images} == {
        source.SOPInstanceUID
    }


def _flip(norm: str, lower: float, upper: float | None, verified: bool = True) -> FlipBound:
    return FlipBound(
        norm=norm,
        lower=lower,
        upper=upper,
        clean_class="effusion",
        found_class=None if upper is None else "normal",
        adversarial_distance=None if upper is None else upper * 0.96875,
        verified=verified,
        attack="apgd_ce" if norm == "inf" else "pgd_l2",
        steps=20,
        restarts=1,
        stopped="converged",
        model_calls=321,
        gradient_calls=300,
    )


#: a block as /predict answers it: the L∞ flip found and verified, none in L2 up to its cap,
#: and a certificate at σ = 12 (values exactly representable, so they read back unchanged)
ROBUSTNESS = RobustnessBlock(
    flip={"linf": _flip("inf", 1.5, 1.625), "l2": _flip("2", 4096.0, None)},
    certified=CertifiedBound(
        smoothed_class="effusion",
        radius=6.25,
        p_lower=0.6875,
        n0=100,
        n=1000,
        alpha=0.001,
        sigma=12.0,
        trained_sigma=12.0,
        model_calls=1100,
    ),
)


def _robustness_numbers(sr: Dataset) -> dict[tuple[str, str], tuple[float, str]]:
    """(concept, method code) → (value, unit) of every robustness NUM item."""
    return {
        (
            item.ConceptNameCodeSequence[0].CodeValue,
            next(
                sub.ConceptCodeSequence[0].CodeValue
                for sub in item.ContentSequence
                if sub.ConceptNameCodeSequence[0].CodeValue == "370129005"  # SCT Method
            ),
        ): (
            float(item.MeasuredValueSequence[0].NumericValue),
            item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue,
        )
        for item in _content_items(sr)
        if item.ValueType == "NUM"
        and item.ConceptNameCodeSequence[0].CodingSchemeDesignator == TRUST_SCHEME
    }


def test_sr_with_robustness_passes_dciodvfy(
    source: Dataset, validator: None, tmp_path: Path
) -> None:
    sr = build_structured_report(source, FINDING, MODEL, robustness=ROBUSTNESS)
    result = dciodvfy(write(sr, tmp_path / "sr.dcm"))
    assert not result.errors, result.output


def test_sr_records_the_robustness_as_measurements(tmp_path: Path) -> None:
    source = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    sr = build_structured_report(source, FINDING, MODEL, robustness=ROBUSTNESS)
    sr = pydicom.dcmread(write(sr, tmp_path / "sr"))

    pixel = "{pixel_value}"
    assert _robustness_numbers(sr) == {
        ("flip-lower", "flip-apgd_ce-inf"): (1.5, pixel),
        ("flip-upper", "flip-apgd_ce-inf"): (1.625, pixel),
        ("flip-lower", "flip-pgd_l2-2"): (4096.0, pixel),  # no flip found: no upper end
        ("cert-radius", "rand-smoothing"): (6.25, pixel),
        ("cert-p-lower", "rand-smoothing"): (0.6875, "1"),
    }
    items = list(_content_items(sr))
    methods = {
        item.ConceptCodeSequence[0].CodeMeaning
        for item in items
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "370129005"
    }
    assert methods == {
        "apgd_ce bracket search, L-inf",
        "pgd_l2 bracket search, L2",
        "randomized smoothing (Cohen et al. 2019), L2",
    }
    texts = {item.TextValue for item in items if item.ValueType == "TEXT"}
    assert {"sigma=12", "n0=100", "n=1000", "alpha=0.001"} <= texts
    coded = {
        item.ConceptNameCodeSequence[0].CodeValue: item.ConceptCodeSequence[0].CodeMeaning
        for item in items
        if item.ValueType == "CODE"
        and item.ConceptNameCodeSequence[0].CodingSchemeDesignator == TRUST_SCHEME
    }
    assert coded == {"flip-class": "normal", "smoothed-class": "effusion"}
    schemes = [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence]
    assert TRUST_SCHEME in schemes


def test_sr_leaves_out_an_unverified_flip_and_names_abstention(tmp_path: Path) -> None:
    source = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    block = RobustnessBlock(
        flip={"linf": _flip("inf", 1.5, 1.625, verified=False)},
        certified=ROBUSTNESS.certified.model_copy(
            update={"smoothed_class": "abstain", "radius": 0.0}
        ),
    )
    sr = pydicom.dcmread(
        write(build_structured_report(source, FINDING, MODEL, robustness=block), tmp_path / "sr")
    )
    numbers = _robustness_numbers(sr)
    assert ("flip-upper", "flip-apgd_ce-inf") not in numbers
    assert numbers[("cert-radius", "rand-smoothing")] == (0.0, "{pixel_value}")
    smoothed = [
        item.ConceptCodeSequence[0].CodeValue
        for item in _content_items(sr)
        if item.ValueType == "CODE"
        and item.ConceptNameCodeSequence[0].CodeValue == "smoothed-class"
    ]
    assert smoothed == ["abstain"]


def test_sr_without_robustness_uses_no_robustness_concept(tmp_path: Path) -> None:
    source = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    sr = pydicom.dcmread(write(build_structured_report(source, FINDING, MODEL), tmp_path / "sr"))
    assert _robustness_numbers(sr) == {}
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence] == [
        "99MEDROBUST"
    ]


def test_sc_is_the_overlay_labelled_derived(source: Dataset, tmp_path: Path) -> None:
    rgb = overlay_for(source)
    sc = build_secondary_capture(source, rgb, MODEL, method="gradcam", layer="conv5_block3_out")
    sc = pydicom.dcmread(write(sc, tmp_path / "sc"))
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    np.testing.assert_array_equal(sc.pixel_array, rgb)
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "NOT FOR DIAGNOSIS" in sc.SeriesDescription
    assert NOT_FOR_DIAGNOSIS in sc.ImageComments
    for words in ("gradcam", "conv5_block3_out", "chest:3", MODEL.weights_sha256):
        assert words in sc.DerivationDescription
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID
    assert sc.PatientName == source.PatientName
    reference = sc.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    if int(source.get("NumberOfFrames") or 1) > 1:
        assert reference.ReferencedFrameNumber == 1  # only the first frame is analysed


def test_building_leaves_the_source_as_it_was(source: Dataset) -> None:
    before = copy.deepcopy(source)
    build_structured_report(source, FINDING, MODEL)
    build_secondary_capture(source, overlay_for(source), MODEL)
    assert source == before


def test_results_repeat_nothing_else_from_the_source(tmp_path: Path) -> None:
    source = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    source.add_new(0x00091001, "LO", "private vendor value")
    assert all(keyword in source for keyword in NOT_COPIED)
    sr = build_structured_report(source, FINDING, MODEL)
    sc = build_secondary_capture(source, overlay_for(source), MODEL)
    for ds in (sr, sc):
        ds = pydicom.dcmread(write(ds, tmp_path / "out.dcm"))
        leaked = [k for k in NOT_COPIED if k in ds and ds[k].value == source[k].value]
        assert not leaked
        assert not any(element.tag.is_private for element in ds)


def test_building_logs_and_warns_no_patient_values(
    source: Dataset, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    caplog.set_level(logging.DEBUG)
    build_structured_report(source, FINDING, MODEL)
    build_secondary_capture(source, overlay_for(source), MODEL)
    said = [record.getMessage() for record in caplog.records] + [str(w.message) for w in recwarn]
    for keyword in ("PatientName", "PatientID", "ReferringPhysicianName"):
        value = str(source.get(keyword) or "")
        if value:
            assert not [line for line in said if value in line], keyword


def test_uids_are_deterministic_per_source_and_model() -> None:
    ct = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    first = build_structured_report(ct, FINDING, MODEL)
    again = build_structured_report(ct, FINDING, MODEL)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID

    retrained = ModelIdentity(name="chest", version=4, weights_sha256="f" * 64)
    other = build_structured_report(ct, FINDING, retrained)
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID

    sibling = ct.copy()
    sibling.SOPInstanceUID = pydicom.uid.generate_uid()
    same_series = build_structured_report(sibling, FINDING, MODEL)
    assert same_series.SOPInstanceUID != first.SOPInstanceUID
    assert same_series.SeriesInstanceUID == first.SeriesInstanceUID

    # an SR with the robustness group is another document (a PACS keeps the first of two
    # objects sharing a UID), in the same series, and just as deterministic
    robust = build_structured_report(ct, FINDING, MODEL, robustness=ROBUSTNESS)
    assert robust.SOPInstanceUID != first.SOPInstanceUID
    assert robust.SeriesInstanceUID == first.SeriesInstanceUID
    again = build_structured_report(ct, FINDING, MODEL, robustness=ROBUSTNESS)
    assert again.SOPInstanceUID == robust.SOPInstanceUID

    overlay = overlay_for(ct)
    gradcam = build_secondary_capture(ct, overlay, MODEL, method="gradcam")
    plus = build_secondary_capture(ct, overlay, MODEL, method="gradcam++")
    assert gradcam.SOPInstanceUID != plus.SOPInstanceUID
    assert len({first.SOPInstanceUID, gradcam.SOPInstanceUID, ct.SOPInstanceUID}) == 3


def test_source_without_optional_study_values_still_builds(validator: None, tmp_path: Path) -> None:
    source = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    for keyword in ("AccessionNumber", "StudyID", "ReferringPhysicianName", "PatientBirthDate"):
        del source[keyword]
    sr = build_structured_report(source, FINDING, MODEL)
    assert sr.AccessionNumber == "" and sr.StudyID == ""
    assert not dciodvfy(write(sr, tmp_path / "sr.dcm")).errors


def test_bad_inputs_are_refused_with_a_reason() -> None:
    ct = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    with pytest.raises(ValueError, match="not among"):
        Finding("cat", 0.5, {"dog": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Finding("dog", 1.5)
    with pytest.raises(ValueError, match="uint8"):
        build_secondary_capture(ct, np.zeros((8, 8), np.uint8), MODEL)
    del ct.SOPInstanceUID
    # a DicomInputError: the PACS paths skip such an instance instead of failing the job
    with pytest.raises(DicomInputError, match="SOPInstanceUID"):
        build_structured_report(ct, FINDING, MODEL)


def test_unreadable_instance_number_becomes_1() -> None:
    ct = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    ct.InstanceNumber = 777
    buffer = pydicom.filebase.DicomBytesIO()
    ct.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue().replace(b"777 ", b"abc ")  # as an untrusted file may hold it
    source = pydicom.dcmread(pydicom.filebase.DicomBytesIO(raw))
    assert build_structured_report(source, FINDING, MODEL).InstanceNumber == 1


def _content_items(ds: Dataset):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)
