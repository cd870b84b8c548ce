"""Fixtures of the web viewer's browser tests: one real stack (uvicorn API + Celery worker on
Redis db 15) over a tiny store, and a fresh headless Chromium per test (its own sessionStorage).

The store is :func:`~tests.support.api_server.build_store`'s (``derm`` attention v1/v2 with
alias ``production``, ``derm-baseline``), plus ``cxr``
(:func:`~tests.support.chest.save_chest_model`), a baseline that declares it accepts only CR/DX
chest images, so a CT image meets the 422 and its override. Tokens: ``viewer-all`` holds every
scope, ``viewer-look`` only predict and explain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.api_server import build_store
from tests.support.browser import Browser, require_browser
from tests.support.chest import save_chest_model
from tests.support.images import make_folder_dataset
from tests.support.jobs_stack import REDIS_URL, Stack, running_stack

TOKENS = {
    "viewer-all": ["predict", "explain", "jobs", "admin"],
    "viewer-look": ["predict", "explain"],
}


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_browser()  # before minutes of start-up, not after
    root = tmp_path_factory.mktemp("web")
    save_chest_model(build_store(root / "models"))  # cxr
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
