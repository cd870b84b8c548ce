"""An unreadable task defaults file in the store (``_tasks.json``: a hand edit, a truncated write)
is a clear, documented error everywhere it is read, never a 500 nor a traceback.

On a real uvicorn over a tiny store: a request naming only a task the file would answer is a 503
naming the file as the store's (never its server path) and the fix; a request naming its models,
or a task ``MEDROBUST_DEFAULT_MODELS`` names, is served; ``/session`` still answers, with the
configured defaults and the problem. The ``medrobust`` CLI (a real subprocess) refuses with one
line and leaves the file as it is. A server started on a broken file starts all the same and
serves the same answers.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_server import LiveServer, build_store, start_server
from tests.support.images import png_bytes
from tests.support.scratch import scratch_dir
from training.store import ModelStore
from training.task_defaults import (
    TASKS_FILE,
    TaskDefaultsFileError,
    read_task_defaults,
    set_task_default,
)

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("medrobust"))
TOKEN = "tasks-token"
CONFIGURED = {"configured": "derm-baseline"}  # MEDROBUST_DEFAULT_MODELS
BROKEN = b'{"derm": "derm:production",'  # cut off mid-write
PNG_BASE64 = base64.b64encode(png_bytes()).decode()
FIX = "delete it and set each default again with `medrobust models default TASK REF`"

# bytes a store's task defaults file might hold -> words of the reason given
UNREADABLE = {
    "truncated": (BROKEN, "not JSON"),
    "empty": (b"", "not JSON"),
    "not text": (b"\xff\xfe\x00garbage", "not JSON"),
    "a list": (b'["derm"]', "a JSON list, not an object"),
    "a number as ref": (b'{"derm": 3}', "task 'derm' maps to 3, not a model ref"),
    "a path as ref": (b'{"derm": "../derm"}', "bad model ref '../derm'"),
    "a path as task": (b'{"../x": "derm"}', "task '../x' is not a valid name"),
}


@pytest.mark.parametrize(("content", "reason"), UNREADABLE.values(), ids=UNREADABLE.keys())
def test_an_unreadable_file_is_named_with_the_reason_and_the_fix(tmp_path, content, reason):
    path = tmp_path / TASKS_FILE
    path.write_bytes(content)

    with pytest.raises(TaskDefaultsFileError) as raised:
        read_task_defaults(tmp_path)

    assert reason in raised.value.problem
    assert str(path) in str(raised.value) and FIX in str(raised.value)
    assert str(tmp_path) not in raised.value.problem  # what the API may show


def test_setting_a_default_leaves_an_unreadable_file_as_it_is(tmp_path):
    """Rewriting it would drop the other tasks' defaults it may still hold."""
    (tmp_path / TASKS_FILE).write_bytes(BROKEN)

    with pytest.raises(TaskDefaultsFileError):
        set_task_default(tmp_path, "chest", "chest:1")

    assert (tmp_path / TASKS_FILE).read_bytes() == BROKEN


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with scratch_dir(request, tmp_path_factory, "task-defaults") as scratch:
        root = scratch.resolve()
        live = start_server(
            build_store(root / "models"),
            root / "state",
            root / "uvicorn.log",
            api_tokens={TOKEN: ["predict", "explain"]},
            default_models=CONFIGURED,
        )
        yield live
        live.stop()


@pytest.fixture()
def broken(server: LiveServer) -> Iterator[Path]:
    """The store's task defaults file, broken for one test, then gone."""
    path = server.store_dir / TASKS_FILE
    path.write_bytes(BROKEN)
    yield path
    path.unlink(missing_ok=True)


def _image() -> dict:
    return {"image": ("x.png", png_bytes(), "image/png")}


def test_a_task_request_is_503_naming_the_file_and_the_fix(server, broken):
    with server.client(TOKEN) as client:
        answers = {
            "predict task": client.post("/predict", files=_image(), data={"task": "derm"}),
            "predict no task": client.post("/predict", files=_image()),
            "explain task": client.post("/explain", files=_image(), data={"task": "derm"}),
            "json task": client.post("/predict", json={"image_base64": PNG_BASE64, "task": "derm"}),
        }

    for what, answer in answers.items():
        assert answer.status_code == 503, (what, answer.text)
        detail = answer.json()["detail"]
        assert f"<store>/{TASKS_FILE} is unreadable (not JSON:" in detail, what
        assert FIX in detail and "'models'" in detail, what
        assert str(server.store_dir) not in detail, what  # no server path in an answer
    assert f"{broken} is unreadable" in server.log_tail()  # the operator's log names it


def test_naming_the_models_or_a_configured_task_still_works(server, broken):
    with server.client(TOKEN) as client:
        by_ref = client.post("/predict", files=_image(), data={"models": "derm:production"})
        configured = client.post("/predict", files=_image(), data={"task": "configured"})

    for answer, (name, version) in ((by_ref, ("derm", 1)), (configured, ("derm-baseline", 1))):
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["predictions"]
        manifest = ModelStore(server.store_dir).manifest(name, str(version))
        assert (prediction["model"], prediction["version"]) == (name, version)
        assert prediction["weights_sha256"] == manifest.weights_sha256


def test_session_lists_the_configured_defaults_and_the_problem(server, broken):
    with server.client(TOKEN) as client:
        answer = client.get("/session")
        broken.unlink()  # repaired: the next request reads the file again, no restart
        repaired = client.get("/session")
        set_task_default(server.store_dir, "derm", "derm:production")
        served = client.post("/predict", files=_image(), data={"task": "derm"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["default_models"] == CONFIGURED
    problem = answer.json()["task_defaults_error"]
    assert f"<store>/{TASKS_FILE} is unreadable" in problem and FIX in problem
    assert repaired.json()["task_defaults_error"] is None
    assert served.status_code == 200, served.text
    assert served.json()["predictions"][0]["ref"] == "derm:production"


def test_the_503_is_documented(server):
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    for route in ("/predict", "/explain"):
        documented = schema["paths"][route]["post"]["responses"]
        assert "task defaults file is unreadable" in documented["503"]["description"], route


def test_the_cli_says_it_in_one_line_and_leaves_the_file(server, broken):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDROBUST_")}
    env["MEDROBUST_STORE_DIR"] = str(server.store_dir)
    run = subprocess.run(
        [CLI, "models", "default", "chest", "derm:1"],
        capture_output=True, text=True, env=env, cwd=server.state_dir, timeout=120,
    )  # fmt: skip

    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"error: the task defaults file {broken} is unreadable (not JSON: ")
    assert line.endswith(f"): fix it, or {FIX}")
    assert broken.read_bytes() == BROKEN


def test_a_server_started_on_a_broken_file_starts_and_serves_models_by_name(tmp_path):
    store_dir = build_store(tmp_path / "models")
    (store_dir / TASKS_FILE).write_bytes(BROKEN)
    live = start_server(
        store_dir, tmp_path / "state", tmp_path / "uvicorn.log", api_tokens={TOKEN: ["predict"]}
    )
    try:
        with live.client(TOKEN) as client:
            by_ref = client.post("/predict", files=_image(), data={"models": "derm:production"})
            by_task = client.post("/predict", files=_image(), data={"task": "derm"})
    finally:
        live.stop()

    assert by_ref.status_code == 200, by_ref.text
    assert by_task.status_code == 503, by_task.text
    # the whole log: the runtime's fallback lines for each model come after this one
    assert "starting without the store's task defaults" in live.log_path.read_text()
