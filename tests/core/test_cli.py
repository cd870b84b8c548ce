"""The `medrobust` console command, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow
CLI = [str(Path(sys.executable).with_name("medrobust"))]


def _medrobust(*args: str, store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDROBUST_STORE_DIR": str(store), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    rng = np.random.default_rng(4)
    for label, level in (("normal", 60), ("abnormal", 180)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(10):
            image = np.clip(level + rng.normal(0, 20, (40, 40)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp_path / "data" / label / f"{label}{i}.png"), image)
    return tmp_path / "data"


def test_train_list_show_alias_and_predict(tmp_path, folder_dataset):
    store = tmp_path / "store"
    trained = _medrobust(
        "train",
        "--name",
        "tiny",
        "--dataset",
        "folders",
        "--data",
        str(folder_dataset),
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--set",
        "train.batch_size=4",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        store=store,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    summary = json.loads(trained.stdout[trained.stdout.index("{") :])
    assert summary["model"] == "tiny:1" and len(summary["weights_sha256"]) == 64

    listed = _medrobust("models", "list", store=store)
    assert listed.stdout.startswith("tiny:1") and "baseline" in listed.stdout

    shown = json.loads(_medrobust("models", "show", "tiny:latest", store=store).stdout)
    assert shown["class_names"] == ["abnormal", "normal"]
    assert shown["training_spec"]["train"]["epochs"] == 1
    assert shown["training_spec"]["train"]["learning_rate"] == 0.01  # the paper's default

    assert _medrobust("models", "alias", "tiny", "1", "production", store=store).returncode == 0
    image = folder_dataset / "normal" / "normal0.png"
    predicted = json.loads(
        _medrobust("predict", str(image), "--model", "tiny:production", store=store).stdout
    )
    assert predicted["model"] == "tiny" and predicted["version"] == 1
    assert predicted["weights_sha256"] == summary["weights_sha256"]
    assert sum(predicted["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    result = _medrobust("predict", str(tmp_path / "x.png"), "--model", "nope", store=tmp_path)
    assert result.returncode == 2
    # TensorFlow may log start-up lines first; our message is the last line
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model named 'nope'")
    missing = _medrobust("train", store=tmp_path)
    assert missing.returncode == 2
