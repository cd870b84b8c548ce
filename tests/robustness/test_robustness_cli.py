"""`medrobust evaluate` and `medrobust explain` on stored models, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from tests.support.scratch import scratch_dir
from training.attacks import make_attack
from training.explain.image import explain_image
from training.explain.panel import PNG_KEY
from training.models import ArchitectureConfig, build_from_config
from training.preprocess import PreprocessConfig
from training.store import ModelStore

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("medrobust"))


@pytest.fixture(scope="module")
def workspace(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A class-folder dataset and a store holding an untrained baseline and attention model."""
    with scratch_dir(request, tmp_path_factory, "eval") as root:
        rng = np.random.default_rng(8)
        for label in ("benign", "malignant"):
            (root / "data" / label).mkdir(parents=True)
            for i in range(10):
                image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                cv2.imwrite(str(root / "data" / label / f"{label}{i}.png"), image)
        store = ModelStore(root / "store")
        keras.utils.set_random_seed(1)
        for architecture in ("baseline", "attention"):
            config = ArchitectureConfig(architecture=architecture, num_classes=2, input_size=32)
            store.save(
                build_from_config(config),
                architecture,
                config,
                PreprocessConfig(input_size=32),
                ["benign", "malignant"],
            )
        yield root


def _run(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDROBUST_STORE_DIR": str(root / "store"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=600)


def test_evaluate_writes_json_markdown_and_png(workspace):
    out = workspace / "reports" / "report.json"
    result = _run(
        "evaluate",
        "--models",
        "baseline,attention",
        "--dataset",
        "folders",
        "--data",
        str(workspace / "data"),
        "--split",
        "test",
        "--attacks",
        "fgsm,pgd",
        "--eps",
        "0,8",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--out",
        str(out),
        root=workspace,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [m["name"] for m in report["models"]] == ["baseline", "attention"]
    assert report["models"][1]["attention_variant"] == "paper"
    assert len(report["results"]) == 2 * 2 * 2 and report["n"] == 4  # 20 % of 20 images
    assert report["dataset_fingerprint"] and report["code_version"].startswith("0.1.0")
    assert out.with_suffix(".md").read_text().startswith("Robustness on n=4")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| baseline:1 | pgd | 8 |" in result.stdout


def test_explain_writes_a_panel_and_compares_clean_with_attacked(workspace):
    out = workspace / "panel.png"
    image = workspace / "data" / "benign" / "benign0.png"
    result = _run(
        "explain",
        str(image),
        "--model",
        "attention",
        "--attack",
        "pgd",
        "--eps",
        "8",
        "--steps",
        "2",
        "--out",
        str(out),
        root=workspace,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["overlays"] == [
        "gradcam",
        "attention",
        "adversarial_image",
        "gradcam_adversarial",
        "attention_adversarial",
    ]
    assert summary["prediction"]["model"] == "attention"
    assert summary["attack"]["name"] == "pgd" and summary["attack"]["epsilon"] == 8
    panel = cv2.imread(str(out))  # five titled tiles of ≥ 512 px and a colour bar
    assert panel.shape[0] > 512 and panel.shape[1] > 5 * 512
    with Image.open(out) as read:
        tiles = json.loads(read.text[PNG_KEY])["tiles"]
    assert [tile["key"] for tile in tiles] == summary["overlays"]
    assert tiles[-1]["title"][0] == "attacked: pgd L∞ ε=8/255"


def test_explain_image_without_attack_for_a_baseline(workspace):
    loaded = ModelStore(workspace / "store").load("baseline")
    image = np.full((50, 60, 3), 120, np.uint8)
    result = explain_image(loaded, image, method="gradcam++", class_index=1)
    assert list(result.overlays) == ["gradcam++"]
    assert result.class_explained == "malignant" and result.comparison is None
    attacked = explain_image(loaded, image, attack=make_attack("fgsm", epsilon=4))
    assert attacked.comparison is not None and attacked.adversarial_prediction is not None
