"""The trust section of evaluation reports (training.trust.report) on real HAM10000 images with
the tiny CNNs of ``tests.support.tiny_models`` stored in a real model store, through the API and
through ``medrobust evaluate --trust``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.tiny_models import ham_case
from training.models import ArchitectureConfig
from training.preprocess import PreprocessConfig
from training.store import ModelStore
from training.trust import FlipSpec
from training.trust.answer import NoiseSigmaMissing
from training.trust.report import EPSILONS, RADII, SCHEMA_VERSION, evaluate_trust, write

pytestmark = [pytest.mark.data, pytest.mark.slow]
SIGMA = 64.0
NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
CLI = str(Path(sys.executable).with_name("medrobust"))
TRUST_LIMIT = 7  # the stratified sample keeps one image of each class


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


def _is_share_of(value: float, total: int) -> bool:
    """Is ``value`` one of 0, 1/total, …, 1 (a count over ``total`` images, as JSON floats)?"""
    return 0 <= value <= 1 and abs(value * total - round(value * total)) < 1e-9


def test_evaluate_cli_writes_the_trust_section(tmp_path, data_dir):
    _stored(tmp_path, data_dir)
    out = tmp_path / "reports" / "r.json"
    command = [
        CLI, "evaluate", "--models", "plain,noisy", "--data", str(data_dir / "ham10000_200x150"),
        "--limit", "7", "--attacks", "fgsm", "--eps", "1", "--out", str(out),
        "--trust", "certify,flip", "--trust-limit", str(TRUST_LIMIT), "--trust-n", "100",
        "--noise-sigma", str(SIGMA), "--store", str(tmp_path / "models"),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    trust = json.loads((out.parent / "r_trust.json").read_text())
    assert trust["schema_version"] == SCHEMA_VERSION and trust["class_names"] == NAMES
    assert trust["n_images"] == TRUST_LIMIT
    plain, noisy = trust["models"]
    assert (plain["ref"], noisy["ref"]) == ("plain:1", "noisy:1")
    assert plain["sigma_warning"] and noisy["sigma_warning"] is None  # σ given for "plain" only
    for section in trust["models"]:
        curve = section["certified"]
        assert curve["sigma"] == SIGMA and curve["radii"] == list(RADII)
        assert curve["n_images"] == TRUST_LIMIT
        accuracy = curve["certified_accuracy"]
        assert accuracy == sorted(accuracy, reverse=True)  # fewer images at each larger radius
        assert all(_is_share_of(a, TRUST_LIMIT) for a in [*accuracy, curve["abstain_fraction"]])
        assert curve["clean_smoothed_accuracy"] == accuracy[0]
        assert accuracy[0] + curve["abstain_fraction"] <= 1  # an abstention is never correct
        flip = section["flip"]
        assert flip["norm"] == "inf" and flip["epsilons"] == list(EPSILONS)
        assert flip["n_images"] == TRUST_LIMIT and 0 <= flip["n_correct"] <= TRUST_LIMIT
        fractions = flip["flipped_fraction"]
        assert fractions == sorted(fractions)  # flipped at ε ≤ e: more as e grows
        assert all(_is_share_of(f, max(flip["n_correct"], 1)) for f in fractions)
        assert set(flip["per_class"]) <= set(NAMES)
        assert sum(q["n"] for q in flip["per_class"].values()) == flip["n_correct"]
        quartiles = [flip["overall"][k] for k in ("q1", "median", "q3")]
        finite = [q for q in quartiles if q is not None]  # None: beyond the search, at the end
        assert finite == sorted(finite) and quartiles[: len(finite)] == finite
    assert sum(section["flip"]["n_correct"] for section in trust["models"]) > 0
    table = (out.parent / "r_trust.md").read_text()
    assert table.startswith(f"Trust on {TRUST_LIMIT} images") and table in done.stdout
    assert "| plain:1 | 64 |" in table and "| noisy:1 | 64 |" in table
    for name in ("r_trust_certified.png", "r_trust_flip.png"):
        assert (out.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
