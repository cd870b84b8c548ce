"""What a new user meets first, on a real uvicorn with an empty model store: the docs pages load
without internet, and every "no such model" answer says how to get a first model."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.support.api_server import LiveServer, start_server
from tests.support.images import png_bytes
from tests.support.scratch import scratch_dir

pytestmark = pytest.mark.integration

HINT = "no model yet: run `make demo` (or medrobust quickstart) or POST /jobs/training"


@pytest.fixture(scope="module")
def empty_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with scratch_dir(request, tmp_path_factory, "first-run") as root:
        server = start_server(root / "models", root / "state", root / "uvicorn.log")
        yield server
        server.stop()


class _References(HTMLParser):
    """Every URL an HTML page makes the browser fetch: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_every_asset_from_the_server_itself(empty_server, page):
    with httpx.Client(base_url=empty_server.url, timeout=30) as http:
        answer = http.get(page)
        assert answer.status_code == 200
        html = answer.text
        # no absolute URL anywhere in the page: not in tags, not in the inline script
        assert re.findall(r"(?:https?:)?//[\w.-]+\.\w+", html) == []
        assets = _references(html)
        scripts = [url for url in assets if url.endswith(".js")]
        assert scripts, f"{page} references no script: {assets}"
        for url in assets:
            absolute = urljoin(empty_server.url + page, url)
            assert urlsplit(absolute).netloc == urlsplit(empty_server.url).netloc, url
            fetched = http.get(absolute)
            assert fetched.status_code == 200, url
            assert len(fetched.content) > 1000, url  # the real bundle, not an error page
        # the page's schema is served here too
        assert http.get("/openapi.json").json()["info"]["title"] == "medrobust"


def test_swagger_ui_bundle_is_the_real_one(empty_server):
    html = httpx.get(f"{empty_server.url}/docs", timeout=30).text
    (script,) = [url for url in _references(html) if url.endswith("swagger-ui-bundle.js")]
    body = httpx.get(urljoin(empty_server.url, script), timeout=30)
    assert "SwaggerUIBundle" in body.text
    assert body.headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_predict_on_an_empty_store_says_how_to_get_a_model(empty_server):
    image = {"image": ("x.png", png_bytes(), "image/png")}
    with httpx.Client(base_url=empty_server.url, timeout=60) as http:
        by_ref = http.post("/predict", files=image, data={"models": "derm:production"})
        by_task = http.post("/predict", files=image, data={"task": "derm"})
        unnamed = http.post("/predict", files=image)
    assert by_ref.status_code == 404 and HINT in by_ref.json()["detail"]
    assert "no model named 'derm'" in by_ref.json()["detail"]
    assert by_task.status_code == 404 and HINT in by_task.json()["detail"]
    assert unnamed.status_code == 422 and HINT in unnamed.json()["detail"]


def test_explain_on_an_empty_store_says_how_to_get_a_model(empty_server):
    image = {"image": ("x.png", png_bytes(), "image/png")}
    answer = httpx.post(
        f"{empty_server.url}/explain", files=image, data={"models": "derm"}, timeout=60
    )
    assert answer.status_code == 404
    assert HINT in answer.json()["detail"]


def test_the_hint_is_only_for_an_empty_store(live_server, client):
    """With models stored, an unknown one is a plain 404 naming the stored models."""
    answer = client.post(
        "/predict",
        files={"image": ("x.png", png_bytes(), "image/png")},
        data={"models": "nosuch"},
    )
    assert answer.status_code == 404
    assert "derm" in answer.json()["detail"] and "make demo" not in answer.json()["detail"]
