"""What a model accepts: ``DicomAcceptance``, ``check_acceptance``, and where it is recorded
(the training spec and the store manifest, where old manifests still load as "any")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from tests.support.dicom_factory import make_dicom
from training.config import TrainingSpec
from training.dicom import DicomAcceptance, ModalityMismatchError, check_acceptance, read_dicom
from training.store import ModelManifest

CHEST = DicomAcceptance(modalities=["CR", "DX"], body_parts=["CHEST"])


def _real(name: str):
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data missing?)")
    return read_dicom(path)


def test_a_cr_chest_is_accepted_by_the_chest_model():
    check_acceptance(_real("RG1_UNCR.dcm"), CHEST)  # Modality CR, Body Part CHEST


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower case, as files carry it
def test_comparison_is_case_insensitive_both_ways():
    lower = DicomAcceptance(modalities=[" cr", "dx"], body_parts=["chest"])
    assert lower == CHEST
    generated = read_dicom(make_dicom(np.zeros((4, 4), np.uint8), Modality="dx"))
    generated.BodyPartExamined = "Chest"
    check_acceptance(generated, lower)


def test_wrong_modality_and_missing_body_part_are_named():
    ct = _real("CT_small.dcm")  # Modality CT, no Body Part Examined
    with pytest.raises(ModalityMismatchError) as info:
        check_acceptance(ct, CHEST, model="model chest:3")
    message = str(info.value)
    for words in ("model chest:3", "CR/DX", "CHEST", "Modality is CT", "no Body Part Examined"):
        assert words in message, message
    assert (info.value.modality, info.value.body_part) == ("CT", "")
    assert info.value.acceptance == CHEST


def test_wrong_body_part_alone():
    extremity = _real("RG3_UNCR.dcm")  # CR, EXTREMITY
    with pytest.raises(ModalityMismatchError, match="Body Part Examined is EXTREMITY") as info:
        check_acceptance(extremity, CHEST)
    assert "Modality" not in str(info.value).split("but")[1]


def test_modality_only_declaration_ignores_the_body_part():
    check_acceptance(_real("CT_small.dcm"), DicomAcceptance(modalities=["CT"]))


def test_empty_declaration_accepts_anything():
    check_acceptance(_real("rtplan.dcm"), DicomAcceptance())


def test_training_spec_and_manifest_carry_accepts():
    spec = TrainingSpec.model_validate(
        {
            "name": "chest",
            "dataset": {"kind": "medmnist", "path": "pneumoniamnist", "task": "pneumonia"},
            "accepts": {"modalities": ["cr", "DX"], "body_parts": ["chest"]},
        }
    )
    assert spec.accepts == CHEST
    assert (
        TrainingSpec.model_validate(
            {"name": "derm", "dataset": {"kind": "ham10000", "path": "x"}}
        ).accepts
        == DicomAcceptance()
    )
    with pytest.raises(ValueError, match="extra"):
        DicomAcceptance.model_validate({"modality": ["CR"]})


def test_manifests_written_before_accepts_still_load_as_accept_any():
    old = {
        "name": "derm",
        "version": 1,
        "created_at": "2026-01-01T00:00:00+00:00",
        "architecture": {"architecture": "baseline", "num_classes": 2, "input_size": 32},
        "preprocess": {"input_size": 32},
        "class_names": ["a", "b"],
        "weights_sha256": "0" * 64,
        "code_version": "0.1.0",
    }
    assert ModelManifest.model_validate(old).accepts == DicomAcceptance()
    new = ModelManifest.model_validate({**old, "accepts": CHEST.model_dump()})
    assert ModelManifest.model_validate_json(new.model_dump_json()).accepts == CHEST


def test_accepts_from_the_command_line_overrides():
    """``medrobust train --set 'accepts.modalities=[CR, DX]' --set accepts.body_parts=[CHEST]``"""
    import yaml

    from training.config import load_spec

    overrides = {
        "accepts.modalities": yaml.safe_load("[CR, DX]"),
        "accepts.body_parts": yaml.safe_load("[chest]"),
    }
    config = Path(__file__).resolve().parents[2] / "configs" / "ham10000-cpu-64.yaml"
    assert load_spec(config, overrides).accepts == CHEST
    assert load_spec(config).accepts == DicomAcceptance()
