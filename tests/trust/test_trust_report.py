"""The trust section of evaluation reports (training.trust.report) on real HAM10000 images with
the tiny CNNs of ``tests.support.tiny_models`` stored in a real model store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.tiny_models import ham_case
from training.models import ArchitectureConfig
from training.preprocess import PreprocessConfig
from training.store import ModelStore
from training.trust import FlipSpec
from training.trust.answer import NoiseSigmaMissing
from training.trust.report import RADII, SCHEMA_VERSION, evaluate_trust, write

pytestmark = [pytest.mark.data, pytest.mark.slow]
SIGMA = 64.0
NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _stored(tmp_path: Path, data_dir: Path):
    store = ModelStore(tmp_path / "models")
    config = ArchitectureConfig(architecture="baseline", num_classes=7, input_size=32)
    for name, sigma, spec in (("plain", 0.0, {}), ("noisy", SIGMA, {"noise_sigma": SIGMA})):
        model = ham_case(data_dir, sigma).model
        store.save(model, name, config, PreprocessConfig(input_size=32), NAMES,
                   training_spec={"train": spec})  # fmt: skip
    return store.load("plain"), store.load("noisy")


def test_report_json_markdown_and_curves(tmp_path, data_dir):
    plain, noisy = _stored(tmp_path, data_dir)
    case = ham_case(data_dir)
    x, y = case.x_test[::20], case.y_test[::20]  # 7 images, one per class
    with pytest.raises(NoiseSigmaMissing):
        evaluate_trust([plain, noisy], x, y, certify_spec={"n": 50})
    report = evaluate_trust(
        [plain, noisy],
        x,
        y,
        certify_spec={"n": 100, "n0": 20},
        flip_spec=FlipSpec(steps=5, max_model_calls=200),
        noise_sigma=SIGMA,
    )
    assert report.schema_version == SCHEMA_VERSION and report.n_images == len(x)
    first, second = report.models
    assert first.sigma_warning and second.sigma_warning is None
    for section in report.models:
        curve = section.certified
        assert curve is not None and curve.sigma == SIGMA and curve.radii == list(RADII)
        assert curve.certified_accuracy == sorted(curve.certified_accuracy, reverse=True)
        balanced = curve.balanced_certified_accuracy
        assert balanced == sorted(balanced, reverse=True) and len(balanced) == len(RADII)
        assert section.flip is not None and set(section.flip.per_class) <= set(NAMES)
    written = write(report, tmp_path / "report_trust.json")
    assert [p.name for p in written] == [
        "report_trust.json",
        "report_trust.md",
        "report_trust_certified.png",
        "report_trust_flip.png",
    ]
    assert json.loads(written[0].read_text())["schema_version"] == SCHEMA_VERSION
    table = written[1].read_text()
    assert "plain:1" in table and "noisy:1" in table and "(bal. " in table
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written[2:])
    assert np.isfinite(report.models[1].certified.clean_smoothed_accuracy)
