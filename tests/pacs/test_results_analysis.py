"""``analyze_dataset``: a real (tiny, untrained) stored model on real DICOM files → SR + SC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from test_results_dicom import dciodvfy

from service.pacs.analysis import analyze_dataset
from training.dicom import ModalityMismatchError, NoPixelDataError, dicom_to_image
from training.predict import predict_images
from training.store import LoadedModel


@pytest.fixture(scope="module")
def chest_model(chest_store: tuple[Path, str]) -> LoadedModel:
    """The PACS tests' tiny untrained 32-px baseline declaring CR/DX chest images."""
    from training.model_ref import ModelRef
    from training.store import ModelStore

    store_dir, ref = chest_store
    parsed = ModelRef.parse(ref)
    return ModelStore(store_dir).load(parsed.name, parsed.selector)


def _read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def _sr_probabilities(sr: Dataset) -> dict[str, float]:
    """Class meaning → probability, from the measurement groups of our TID 1500 report."""
    container = next(
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER"
        and item.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"
    )
    found = {}
    for group in container.ContentSequence:
        finding = next(item for item in group.ContentSequence if item.ValueType == "CODE")
        number = next(item for item in group.ContentSequence if item.ValueType == "NUM")
        meaning = finding.ConceptCodeSequence[0].CodeMeaning
        found[meaning] = float(number.MeasuredValueSequence[0].NumericValue)
    return found


@pytest.mark.data
@pytest.mark.slow
def test_chest_radiograph_gives_valid_sr_and_sc(
    chest_model: LoadedModel, data_dir: Path, tmp_path: Path
) -> None:
    source = pydicom.dcmread(data_dir / "dicom_samples" / "RG1_UNCR.dcm")  # CR, CHEST
    results = analyze_dataset(source, chest_model)

    expected = predict_images(chest_model, [dicom_to_image(source)])[0]
    reported = _sr_probabilities(results.sr)
    classes = chest_model.manifest.class_names
    assert reported.keys() == set(classes)
    for name in classes:
        assert reported[name] == pytest.approx(expected.probabilities[name], abs=1e-5)
    manifest = chest_model.manifest
    assert manifest.weights_sha256 in results.sc.DerivationDescription
    assert f"{manifest.name}:{manifest.version}" in results.sc.DerivationDescription

    # 1955 x 1841 source → overlay with the same aspect ratio, longest side 1024
    assert (results.sc.Rows, results.sc.Columns) == (1024, 964)
    assert results.sc.pixel_array.std() > 0
    for name, ds in (("sr", results.sr), ("sc", results.sc)):
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert not dciodvfy(path).errors


@pytest.mark.slow
def test_modality_is_checked_unless_told_not_to(chest_model: LoadedModel) -> None:
    ct = _read("CT_small.dcm")
    with pytest.raises(ModalityMismatchError, match="CT"):
        analyze_dataset(ct, chest_model)
    results = analyze_dataset(ct, chest_model, "gradcam++", check_modality=False)
    assert (results.sc.Rows, results.sc.Columns) == (128, 128)  # small images stay as they are
    assert "gradcam++" in results.sc.DerivationDescription
    assert results.sr.StudyInstanceUID == results.sc.StudyInstanceUID == ct.StudyInstanceUID


@pytest.mark.slow
def test_an_instance_without_pixels_is_refused(chest_model: LoadedModel) -> None:
    with pytest.raises(NoPixelDataError):
        analyze_dataset(_read("rtplan.dcm"), chest_model, check_modality=False)


@pytest.mark.slow
def test_colour_multiframe_uses_its_first_frame(chest_model: LoadedModel) -> None:
    source = _read("examples_ybr_color.dcm")
    results = analyze_dataset(source, chest_model, check_modality=False)
    assert results.sc.SourceImageSequence[0].ReferencedFrameNumber == 1
    assert results.sc.pixel_array.shape == (int(source.Rows), int(source.Columns), 3)
    assert np.ptp(results.sc.pixel_array) > 0
