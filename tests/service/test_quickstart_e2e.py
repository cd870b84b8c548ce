"""A new user's first hour, end to end: start the API on an empty store, run ``medrobust
quickstart`` on the staged HAM10000 data (its smallest settings: 32 px, one epoch, 16 images a
split; the same code path as ``make demo``), then run the README's ``/predict`` examples verbatim
against the running API, which was not restarted.

Real parts only: the installed ``medrobust`` command, a real uvicorn, the README's own ``curl``
lines run by bash (only the host, the token and the image are substituted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_server import REPO, TOKENS, LiveServer, start_server
from tests.support.scratch import scratch_dir

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.integration]

CLI = str(Path(sys.executable).with_name("medrobust"))
README_URL = "http://127.0.0.1:8000"
TOKEN = next(token for token, scopes in TOKENS.items() if "predict" in scopes)


def readme_curl(*markers: str) -> str:
    """The README's first ``curl`` command containing every marker, continuation lines joined."""
    lines = (REPO / "README.md").read_text().splitlines()
    for start, line in enumerate(lines):
        if not line.lstrip().startswith("curl"):
            continue
        command = [line]
        while command[-1].endswith("\\"):
            command.append(lines[start + len(command)])
        joined = "\n".join(command)
        if all(marker in joined for marker in markers):
            return joined
    raise AssertionError(f"README.md has no curl example with {markers}")


def run_readme_curl(command: str, server: LiveServer, image: Path) -> tuple[int, dict]:
    """Run ``command`` as the README shows it, against ``server``: ``$H`` holds the token (the
    README sets it the line before), ``lesion.jpg`` is a real lesion image. A bash function
    ``curl`` adds only ``-w`` to print the status after the body."""
    assert README_URL in command and "lesion.jpg" in command
    command = command.replace(README_URL, server.url).replace("lesion.jpg", str(image))
    script = f"curl() {{ command curl -sS -w '\\n%{{http_code}}' \"$@\"; }}\n{command}"
    env = {**os.environ, "H": f"Authorization: Bearer {TOKEN}"}
    run = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    body, _, status = run.stdout.rpartition("\n")
    return int(status), json.loads(body)


@pytest.fixture(scope="module")
def staged(data_dir: Path) -> Path:
    if not (data_dir / "ham10000_200x150" / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"HAM10000 is not staged under {data_dir}/ham10000_200x150")
    return data_dir


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The API on an empty store, with tokens and no configured task defaults."""
    with scratch_dir(request, tmp_path_factory, "quickstart") as root:
        live = start_server(
            root / "models", root / "state", root / "uvicorn.log", api_tokens=TOKENS
        )
        yield live
        live.stop()


def test_quickstart_then_the_readme_predict_examples(staged, server, tmp_path):
    image = next((staged / "ham10000_200x150" / "images").glob("*.jpg"))
    first = readme_curl('-H "$H" -F image=@lesion.jpg -F models=derm:production -F models=derm-b')
    status, before = run_readme_curl(first, server, image)
    assert status == 404 and "medrobust quickstart" in before["detail"]

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDROBUST_")},
        "MEDROBUST_DATA_DIR": str(staged),
        "MEDROBUST_STORE_DIR": str(server.store_dir),  # the one name the API reads too
    }
    quick = subprocess.run(
        [CLI, "quickstart", "--checkpoint-dir", str(tmp_path / "checkpoints"),
         "--input-size", "32", "--epochs", "1", "--limit-per-split", "16"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1800,
    )  # fmt: skip
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert "-F models=derm:production -F models=derm-baseline" in quick.stdout

    status, answer = run_readme_curl(first, server, image)
    assert status == 200, answer
    predictions = answer["predictions"]
    assert [p["model"] for p in predictions] == ["derm", "derm-baseline"]
    assert [p["ref"] for p in predictions] == ["derm:production", "derm-baseline"]
    assert [p["architecture"] for p in predictions] == ["attention", "baseline"]
    for prediction in predictions:
        assert len(prediction["weights_sha256"]) == 64 and prediction["version"] == 1
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    # the JSON example names no model, only the task: the store's task default, no restart
    by_task = readme_curl('\\"task\\": \\"derm\\"')
    status, answer = run_readme_curl(by_task, server, image)
    assert status == 200, answer
    assert [(p["model"], p["version"]) for p in answer["predictions"]] == [("derm", 1)]
