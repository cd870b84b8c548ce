"""Fixtures of the web viewer's browser tests: one real stack (uvicorn API + Celery worker on
Redis db 15) over a tiny store, and a fresh headless Chromium per test (its own sessionStorage).

The store is :func:`~tests.support.api_server.build_store`'s (``derm`` attention v1/v2 with
alias ``production``, ``derm-baseline``), plus ``cxr``
(:func:`~tests.support.chest.save_chest_model`), a baseline that declares it accepts only CR/DX
chest images, so a CT image meets the 422 and its override; ``cxr-at``, a baseline whose
manifest records a defense (PGD-AT) and test metrics, for the Models page's columns; and
``derm-masked``, whose saturated softmax masks its gradients, so an evaluation of it raises a
gradient-masking flag.
Tokens: ``viewer-all`` holds every scope, ``viewer-look`` only predict and explain,
``viewer-predict`` only predict (the page then asks /predict, which draws no overlays).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_server import CLASSES, build_store
from tests.support.browser import Browser, require_browser
from tests.support.chest import save_chest_model
from tests.support.images import make_folder_dataset
from tests.support.jobs_stack import REDIS_URL, Stack, running_stack

TOKENS = {
    "viewer-all": ["predict", "explain", "jobs", "admin"],
    "viewer-look": ["predict", "explain"],
    "viewer-predict": ["predict"],
}
# what cxr-at's manifest records: PGD-AT at ε = 2 with 7 steps; the test split's metrics
AT_SPEC = {"train": {"adversarial": {"method": "pgd", "epsilon": 2.0, "steps": 7}}}
AT_LABELS = [0, 0, 1, 1, 1]
AT_PROBABILITIES = [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]]
MASKING_SCALE = 1000.0


def save_defended_chest_model(store_dir: Path) -> None:
    """``cxr-at``: an untrained 32-px baseline whose manifest records the training spec and
    metrics a PGD-AT training run would (the page only shows the manifest)."""
    import keras
    import numpy as np

    from training.metrics import classification_metrics
    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(2)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    metrics = classification_metrics(np.array(AT_LABELS), np.array(AT_PROBABILITIES))
    ModelStore(store_dir).save(
        build_from_config(config),
        "cxr-at",
        config,
        PreprocessConfig(input_size=32),
        ["normal", "pneumonia"],
        training_spec=AT_SPEC,
        metrics={"test": metrics},
    )


def save_masked_model(store_dir: Path) -> None:
    """``derm-masked``: an untrained 32-px baseline with ``derm``'s classes whose logits are
    scaled by ``MASKING_SCALE``. Its softmax saturates, so the cross-entropy gradient every
    attack follows is exactly 0 and even PGD at ε = 64 changes nothing: the gradient masking the
    report's "not reaching ~0" check exists to flag. (Sorted after ``derm-baseline``, it is not
    the Analyse page's comparison model.)"""
    import keras

    from training.models import LOGITS_LAYER, ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(3)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    model = build_from_config(config)
    logits = model.get_layer(LOGITS_LAYER)
    logits.set_weights([MASKING_SCALE * w for w in logits.get_weights()])
    ModelStore(store_dir).save(
        model,
        "derm-masked",
        config,
        PreprocessConfig(input_size=32),
        CLASSES,
        training_spec={"note": "untrained, logits scaled: masked gradients"},
    )


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_browser()  # before minutes of start-up, not after
    root = tmp_path_factory.mktemp("web")
    save_chest_model(build_store(root / "models"))  # cxr
    save_defended_chest_model(root / "models")
    save_masked_model(root / "models")
    make_folder_dataset(root / "data" / "tiny")  # 10 a class: the test split holds some
    settings = {
        "MEDROBUST_API_TOKENS": json.dumps(TOKENS),
        "MEDROBUST_DEFAULT_MODELS": json.dumps({"derm": "derm:production"}),
    }
    with running_stack(root, REDIS_URL, settings) as stack:
        yield stack


@pytest.fixture()
def api(web_stack: Stack) -> Iterator[httpx.Client]:
    """The stack's API with the all-scopes token: the oracle the page is compared with."""
    headers = {"Authorization": "Bearer viewer-all"}
    with httpx.Client(base_url=web_stack.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture()
def browser() -> Iterator[Browser]:
    require_browser()
    window = Browser()
    yield window
    window.quit()
