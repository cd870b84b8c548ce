"""``medrobust-pacs submit`` answers an API it cannot reach with a message and status 1."""

from __future__ import annotations

import pytest

from service.pacs.cli import main
from tests.support.net import free_port


def test_submit_to_an_api_that_is_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    api = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    argv = ["submit", "--api", api, "--pacs", "orthanc", "--study", "1.2.3", "--model", "m"]
    assert main([*argv, "--wait"]) == 1
    assert f"the API at {api} is unreachable" in capsys.readouterr().err
