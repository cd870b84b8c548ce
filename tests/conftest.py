"""Shared fixtures: where the real data lives, and quiet TensorFlow logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _data_dir() -> Path:
    configured = os.environ.get("MEDROBUST_DATA_DIR")
    return (
        Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"
    )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data (``MEDROBUST_DATA_DIR``); tests needing it skip where it is absent."""
    path = _data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}: set MEDROBUST_DATA_DIR to run this test")
    return path
