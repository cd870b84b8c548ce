"""Fixtures more than one test folder uses, registered once by ``tests/conftest.py``
(``pytest_plugins``): a test asks for one by naming it as an argument, never imports it.

Folder-specific fixtures stay in that folder's ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.api_server import (
    MAX_BATCH_SIZE,
    MAX_BATCH_WAIT_MS,
    MAX_UPLOAD_BYTES,
    TOKENS,
    LiveServer,
    build_store,
    start_server,
)

if TYPE_CHECKING:  # imports Keras: only the tests that train a model should pay for it
    from tests.support.tiny_models import HamCase


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real uvicorn server on :func:`~tests.support.api_server.build_store`'s store for the
    whole session: all tokens of ``TOKENS``, default models ``derm`` and ``baseline``, and the
    upload and batching limits of ``api_server``'s constants."""
    root = tmp_path_factory.mktemp("api")
    server = start_server(
        build_store(root / "models"),
        root / "state",
        root / "uvicorn.log",
        api_tokens=TOKENS,
        default_models={"derm": "derm:production", "baseline": "derm-baseline"},
        max_upload_bytes=str(MAX_UPLOAD_BYTES),
        max_batch_size=str(MAX_BATCH_SIZE),
        max_batch_wait_ms=str(MAX_BATCH_WAIT_MS),
    )
    yield server
    server.stop()


@pytest.fixture()
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client of ``live_server`` with the all-scopes token."""
    with live_server.client() as http:
        yield http


@pytest.fixture(scope="session")
def tiny_ham(data_dir: Path) -> HamCase:
    """A tiny CNN trained on real HAM10000 images at 32 px, with its test images (seconds)."""
    from tests.support.tiny_models import ham_case

    return ham_case(data_dir)
