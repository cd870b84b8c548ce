"""Fixtures for the data tests: tiny image files, and the real data directory (or a skip)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import registry


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``MEDROBUST_DATA_DIR`` as the registry resolves it; tests needing it skip where absent."""
    path = registry.data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}: set MEDROBUST_DATA_DIR to run this test")
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Writes a small real image file (format from the suffix) and returns its path."""

    def write(path: Path, value: int = 128, shape: tuple[int, ...] = (6, 8, 3)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), np.full(shape, value, dtype=np.uint8)):
            raise OSError(f"cv2 could not write {path}")
        return path

    return write


@pytest.fixture
def write_csv() -> Callable[..., Path]:
    """Writes a CSV by hand, one string per line, so malformed files are easy to express."""

    def write(path: Path, *lines: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    return write
