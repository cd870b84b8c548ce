"""``medrobust quickstart`` where the data is absent, and the store's task defaults it sets.

The run itself, on the staged data and against a live API, is tests/service/test_quickstart_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.model_ref import ModelRefError
from training.quickstart import MODELS, QuickstartOptions, quickstart_spec
from training.task_defaults import (
    TASKS_FILE,
    TaskDefaultsError,
    read_task_defaults,
    set_task_default,
)

CLI = str(Path(sys.executable).with_name("medrobust"))


def test_without_the_data_it_says_so_and_trains_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDROBUST_")}
    env |= {"MEDROBUST_DATA_DIR": str(tmp_path / "nothing"), "MEDROBUST_STORE_DIR": "store"}
    run = subprocess.run(
        [CLI, "quickstart"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 3
    assert "the HAM10000 data is not staged" in run.stderr
    assert str(tmp_path / "nothing" / "ham10000_200x150" / "HAM10000_metadata.csv") in run.stderr
    assert not (tmp_path / "store").exists()


def test_the_demo_recipe_is_small_and_names_what_the_readme_calls():
    options = QuickstartOptions(input_size=32, epochs=1, limit_per_split=16)
    specs = [quickstart_spec(name, arch, options) for name, arch in MODELS.items()]
    assert [(s.name, s.model.architecture) for s in specs] == [
        ("derm", "attention"),
        ("derm-baseline", "baseline"),
    ]
    for spec in specs:
        assert spec.dataset.limit_per_split == 16 and spec.dataset.kind == "ham10000"
        assert spec.preprocess.input_size == 32 and spec.train.epochs == 1


def test_task_defaults_round_trip_beside_the_models(tmp_path):
    assert read_task_defaults(tmp_path) == {}
    set_task_default(tmp_path, "derm", "derm:production")
    set_task_default(tmp_path, "chest", "chest:3")
    set_task_default(tmp_path, "derm", "derm:2")
    assert read_task_defaults(tmp_path) == {"derm": "derm:2", "chest": "chest:3"}
    assert json.loads((tmp_path / TASKS_FILE).read_text())["chest"] == "chest:3"


@pytest.mark.parametrize(
    ("task", "ref", "error"),
    [("../x", "derm", TaskDefaultsError), ("derm", "a/b", ModelRefError), ("", "derm", ValueError)],
)
def test_task_defaults_refuse_what_no_store_could_hold(tmp_path, task, ref, error):
    with pytest.raises(error):
        set_task_default(tmp_path, task, ref)
    assert read_task_defaults(tmp_path) == {}
