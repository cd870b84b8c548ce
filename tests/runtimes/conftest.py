"""Fixtures of the serving-runtime tests: the tiny HAM10000 CNN stored in a model store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.runtime_models import store_ham_model


@pytest.fixture()
def ham_stored(tiny_ham, tmp_path: Path):
    """(store root, LoadedModel) of the tiny HAM10000 CNN stored with a real training spec."""
    return store_ham_model(tiny_ham.model, tmp_path / "models")
