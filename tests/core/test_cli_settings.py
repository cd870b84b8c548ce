"""One settings object for both tools, and a CLI that starts without the ML stack and stays quiet.

The CLI runs as a user runs it (a real subprocess of the installed ``medrobust``); the service's
side is its real ``Settings`` class.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from tests.support.scratch import scratch_dir
from training.settings import CoreSettings

CLI = str(Path(sys.executable).with_name("medrobust"))
# what `--help` must not import: seconds of start-up (TensorFlow alone takes several)
ML_STACK = ("tensorflow", "keras", "jax", "cv2", "pydicom", "scipy", "matplotlib")
# TensorFlow's C++ log lines ("I0000 00:00:...", "W0000 ..."), its oneDNN and CPU-feature notices,
# absl's pre-init line
BACKEND_NOISE = ("oneDNN", "cpu_feature_guard", "absl::", "WARNING: All log messages", "I0000 ")


def _clean_env(**settings: str) -> dict[str, str]:
    """This environment without any MEDROBUST_* or TensorFlow log setting, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MEDROBUST_") and k != "TF_CPP_MIN_LOG_LEVEL"
    }
    return {**env, **settings}


def _medrobust(*args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=_clean_env(**settings), cwd=cwd,
        timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A store holding one tiny 2-class model at 32 px (loads and predicts in a second)."""
    import keras

    from training.architecture import ArchitectureConfig
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    with scratch_dir(request, tmp_path_factory, "settings") as scratch:
        root = scratch / "models"
        pixels = keras.Input((32, 32, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(pixels))
        model = keras.Model(pixels, keras.layers.Dense(2, name="logits")(pooled))
        config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
        ModelStore(root).save(model, "tiny", config, PreprocessConfig(input_size=32), ["a", "b"])
        yield root


@pytest.fixture(scope="module")
def image(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    import cv2
    import numpy as np

    with scratch_dir(request, tmp_path_factory, "image") as scratch:
        path = scratch / "grey.png"
        cv2.imwrite(str(path), np.full((40, 40, 3), 128, np.uint8))
        yield path


# -- one name per setting ----------------------------------------------------------------------


def test_cli_and_service_read_one_store_variable(store, tmp_path):
    listed = _medrobust("models", "list", cwd=tmp_path, MEDROBUST_STORE_DIR=str(store))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("tiny:1")
    env = _clean_env(MEDROBUST_STORE_DIR=str(store))
    service = subprocess.run(
        [sys.executable, "-c", "from service.config import Settings; print(Settings().store_dir)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert service.stdout.strip() == str(store), service.stderr


def test_service_settings_are_the_shared_settings(monkeypatch):
    monkeypatch.setenv("MEDROBUST_STORE_DIR", "/srv/models")
    monkeypatch.setenv("MEDROBUST_DATA_DIR", "/srv/data")
    monkeypatch.delenv("MEDROBUST_STORE", raising=False)
    service, core = Settings(), CoreSettings()
    assert isinstance(service, CoreSettings)
    assert service.store_dir == core.store_dir == Path("/srv/models")
    assert service.data_dir == core.data_dir == Path("/srv/data")


def test_data_dir_of_the_loaders_is_the_shared_setting(monkeypatch, tmp_path):
    from training.data.registry import DEFAULT_DATA_DIR, data_dir

    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path == Settings().data_dir
    monkeypatch.setenv("MEDROBUST_DATA_DIR", "")  # empty means unset, not the current directory
    assert data_dir() == DEFAULT_DATA_DIR


@pytest.mark.parametrize("settings_class", [CoreSettings, Settings])
def test_old_store_name_still_works_with_a_warning(settings_class, monkeypatch):
    monkeypatch.delenv("MEDROBUST_STORE_DIR", raising=False)
    monkeypatch.setenv("MEDROBUST_STORE", "/old/models")
    with pytest.warns(
        FutureWarning, match="MEDROBUST_STORE is deprecated: set MEDROBUST_STORE_DIR"
    ):
        assert settings_class().store_dir == Path("/old/models")


def test_new_store_name_wins_over_the_old(monkeypatch):
    monkeypatch.setenv("MEDROBUST_STORE", "/old/models")
    monkeypatch.setenv("MEDROBUST_STORE_DIR", "/new/models")
    with pytest.warns(FutureWarning, match="ignored, since MEDROBUST_STORE_DIR is set"):
        assert Settings().store_dir == Path("/new/models")


def test_no_warning_without_the_old_name(monkeypatch):
    monkeypatch.delenv("MEDROBUST_STORE", raising=False)
    monkeypatch.setenv("MEDROBUST_STORE_DIR", "/new/models")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CoreSettings().store_dir == Path("/new/models")


def test_cli_reads_the_old_store_name_and_says_so(store, tmp_path):
    listed = _medrobust("models", "list", cwd=tmp_path, MEDROBUST_STORE=str(store))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("tiny:1")
    assert "MEDROBUST_STORE is deprecated: set MEDROBUST_STORE_DIR" in listed.stderr


# -- a fast, quiet CLI ---------------------------------------------------------------------------

IMPORTED_AFTER = """
import json, sys
sys.argv = ["medrobust", *sys.argv[1:]]
from training.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {stack})))
"""


@pytest.mark.parametrize("args", [["--help"], ["models", "--help"], ["quickstart", "--help"]])
def test_help_imports_no_ml_stack(args, tmp_path):
    script = IMPORTED_AFTER.format(stack=set(ML_STACK))
    run = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True,
        env=_clean_env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert "Usage" in run.stdout
    assert json.loads(run.stderr.splitlines()[-1]) == []


@pytest.mark.slow
def test_models_list_and_predict_print_no_backend_noise(store, image, tmp_path):
    listed = _medrobust("models", "list", cwd=tmp_path, MEDROBUST_STORE_DIR=str(store))
    assert listed.returncode == 0 and listed.stdout.startswith("tiny:1")
    assert listed.stderr == ""
    # predict imports TensorFlow and Keras: their log lines are silenced too
    predicted = _medrobust(
        "predict", str(image), "--model", "tiny", cwd=tmp_path, MEDROBUST_STORE_DIR=str(store)
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["model"] == "tiny"
    noisy = [
        line for line in predicted.stderr.splitlines() if any(n in line for n in BACKEND_NOISE)
    ]
    assert noisy == []


@pytest.mark.parametrize(("flags", "level"), [([], "2"), (["--verbose"], "0")])
def test_backend_log_level_is_set_before_any_command(flags, level, store, tmp_path):
    """Quiet by default (TensorFlow reads the level when it is first imported, inside a
    command); ``--verbose`` shows everything."""
    script = (
        "import os, sys\n"
        f"sys.argv = ['medrobust', *{flags!r}, 'models', 'list']\n"
        "from training.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), file=sys.stderr)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        env=_clean_env(MEDROBUST_STORE_DIR=str(store)), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert run.stdout.startswith("tiny:1")
    assert run.stderr.strip().splitlines()[-1] == level


def test_models_default_sets_a_task_default_in_the_store(store, tmp_path):
    from training.task_defaults import read_task_defaults

    done = _medrobust(
        "models", "default", "demo", "tiny:1", cwd=tmp_path, MEDROBUST_STORE_DIR=str(store)
    )
    assert done.returncode == 0, done.stderr
    assert read_task_defaults(store)["demo"] == "tiny:1"
    typo = _medrobust(
        "models", "default", "demo", "tinny", cwd=tmp_path, MEDROBUST_STORE_DIR=str(store)
    )
    assert typo.returncode == 2 and "no model named 'tinny'" in typo.stderr
    assert read_task_defaults(store)["demo"] == "tiny:1"
