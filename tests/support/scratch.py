"""Folders for module-scoped fixtures that go when the fixture does, not when the run ends.

``tmp_path_factory.mktemp`` folders otherwise stay until pytest's session ends (stored models,
servers' state, Orthanc stores: ~15 GB over a full run), which starves a CI machine whose
``/tmp`` is small or RAM-backed. Function-level ``tmp_path`` is bounded already by
``tmp_path_retention_policy = "failed"`` in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def scratch_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[Path]:
    """``tmp_path_factory.mktemp(name)``, removed on exit unless a test failed meanwhile.

    For a module-scoped yield fixture: keep whatever uses the folder (servers, workers, Orthanc)
    and its stopping inside the ``with``, so that the folder goes only once they have stopped.
    A test that failed while the folder existed (``request.session.testsfailed`` grew), or an
    exception out of the ``with`` (a server that did not start), keeps the folder and its logs
    for diagnosis; pytest's retention policy then decides at the end of the run.
    """
    failed_before = request.session.testsfailed
    path = tmp_path_factory.mktemp(name)
    yield path  # an exception from the body propagates here and skips the removal below
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)
