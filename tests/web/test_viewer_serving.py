"""The viewer's files and ``/session``, in-process (TestClient): what is served, with which
headers, and what is refused. The browser tests (test_viewer_pages.py) drive the same app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.web.router import STATIC
from tests.support.app_settings import local_settings
from tests.support.scratch import scratch_dir
from training.task_defaults import TASKS_FILE, set_task_default

TOKENS = {"all": ["predict", "explain", "jobs", "admin"], "look": ["predict"]}


@pytest.fixture(scope="module")
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    with scratch_dir(request, tmp_path_factory, "viewer") as root:
        settings = local_settings(
            root,
            api_tokens=TOKENS,
            default_models={"derm": "derm:production"},
        )
        with TestClient(create_app(settings)) as http:
            yield http


def test_every_static_file_is_served_with_a_policy_that_forbids_inline_script(client):
    names = sorted(p.name for p in STATIC.iterdir())
    assert {"index.html", "app.js", "style.css"} <= set(names)

    for name in names:
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy and "connect-src 'self'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")


def test_the_page_loads_only_local_module_scripts_and_no_inline_script(client):
    page = client.get("/ui/").text

    assert '<script type="module" src="/ui/app.js"></script>' in page
    assert page.count("<script") == 1 and " on" + "click=" not in page and "style=" not in page
    assert "http://" not in page and "https://" not in page  # no CDN
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"


@pytest.mark.parametrize(
    "name", ["nope.js", "..%2Fapp.py", "%2E%2E%2Frouter.py", "APP.JS", "app.js.map", ".hidden.js"]
)
def test_anything_else_under_ui_is_404(client, name):
    response = client.get(f"/ui/{name}")

    assert response.status_code == 404, response.text


def test_session_names_the_token_by_fingerprint_and_lists_its_scopes(client):
    look = client.get("/session", headers={"Authorization": "Bearer look"})
    full = client.get("/session", headers={"Authorization": "Bearer all"})

    assert look.status_code == 200, look.text
    body = look.json()
    assert body["authenticated"] is True and body["auth_required"] is True
    assert body["scopes"] == ["predict"]
    assert body["token_id"] != "look" and len(body["token_id"]) == 12
    assert body["default_models"] == {"derm": "derm:production"}
    assert {"fgsm", "pgd"} <= set(body["attacks"])
    assert full.json()["scopes"] == ["admin", "explain", "jobs", "predict"]


def test_session_without_a_token_only_says_one_is_needed_and_a_wrong_one_is_401(client):
    anonymous = client.get("/session")

    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.json() == {
        "authenticated": False,
        "token_id": None,
        "scopes": [],
        "auth_required": True,
        "default_models": {},
        "task_defaults_error": None,
        "attacks": [],
        "pacs": [],
    }
    assert client.get("/session", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_session_lists_the_stores_task_defaults_under_the_configured_ones(client):
    """A default set in the store (``medrobust models default``, the quickstart) reaches the
    viewer without a restart; a configured default for the same task still wins."""
    store_root = client.app.state.models.store.root
    set_task_default(store_root, "cxr", "cxr:production")
    set_task_default(store_root, "derm", "derm-baseline:1")
    try:
        body = client.get("/session", headers={"Authorization": "Bearer look"}).json()
    finally:
        (store_root / TASKS_FILE).unlink()

    assert body["default_models"] == {"cxr": "cxr:production", "derm": "derm:production"}
