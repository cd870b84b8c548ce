"""Suite-wide fixtures, and how the tests share code.

Convention:

* ``tests/`` is a package and ``pyproject.toml`` puts the repository root on ``sys.path``
  (pytest's ``pythonpath``), so shared helpers are plain modules of :mod:`tests.support`,
  imported by dotted name: ``from tests.support.images import png_bytes``. Nothing in ``tests/``
  edits ``sys.path``, and no test imports a module that merely sits in its own folder.
* Fixtures used by more than one folder live in :mod:`tests.support.fixtures`, registered once
  here (``pytest_plugins`` is honoured only in this root conftest); fixtures of one folder live
  in that folder's ``conftest.py``, or in the one module that uses them. A test asks for a
  fixture by naming it as an argument; it never imports one.
* The test folders themselves are not packages (no ``__init__.py``), so pytest's default
  "prepend" import mode names each test module by its file name: test file names are unique
  across folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["tests.support.fixtures"]


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
