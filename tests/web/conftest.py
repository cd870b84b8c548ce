"""Fixtures of the web viewer's browser tests: one real stack (uvicorn API + Celery worker on
Redis db 15) over a tiny store, and a fresh headless Chromium per test (its own sessionStorage).

The store is :func:`~tests.support.api_server.build_store`'s (``derm`` attention v1/v2 with
alias ``production``, ``derm-baseline``), plus ``cxr``, a baseline that declares it accepts only
CR/DX chest images, so a CT image meets the 422 and its override. Tokens: ``viewer-all`` holds
every scope, ``viewer-look`` only predict and explain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_server import build_store
from tests.support.browser import Browser, require_browser
from tests.support.images import make_folder_dataset
from tests.support.jobs_stack import REDIS_URL, Stack, running_stack

TOKENS = {
    "viewer-all": ["predict", "explain", "jobs", "admin"],
    "viewer-look": ["predict", "explain"],
}


def _add_chest_model(store_dir: Path) -> None:
    import keras

    from training.dicom import DicomAcceptance
    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(1)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    ModelStore(store_dir).save(
        build_from_config(config),
        "cxr",
        config,
        PreprocessConfig(input_size=32),
        ["normal", "pneumonia"],
        accepts=DicomAcceptance(modalities=["CR", "DX"], body_parts=["CHEST"]),
    )


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_browser()  # before minutes of start-up, not after
    root = tmp_path_factory.mktemp("web")
    _add_chest_model(build_store(root / "models"))
    make_folder_dataset(root / "data" / "tiny")  # 10 a class: the test split holds some
    settings = {
        "MEDROBUST_API_TOKENS": json.dumps(TOKENS),
        "MEDROBUST_DEFAULT_MODELS": json.dumps({"derm": "derm:production"}),
    }
    with running_stack(root, REDIS_URL, settings) as stack:
        yield stack


@pytest.fixture()
def browser() -> Iterator[Browser]:
    require_browser()
    window = Browser()
    yield window
    window.quit()
