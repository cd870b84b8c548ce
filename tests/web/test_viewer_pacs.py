"""The Analyse page's "From PACS" in a real headless Chromium against a real uvicorn API and a
real Orthanc holding a real CR chest radiograph, a CT and an RT plan in one study
(``tests.support.viewer_pacs``): list the study by keyboard, pick the radiograph, see it
analysed by a chest model, and get the same card as when the same file is uploaded. A study the
PACS does not hold shows the service's 404 in words. The browser logs no other error and sends
no request off this machine. Takes docs/screenshots/analyse-pacs.png.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.api_server import LiveServer, start_server
from tests.support.browser import Browser, require_browser
from tests.support.chest import save_chest_model
from tests.support.scratch import scratch_dir
from tests.support.viewer_pacs import PacsStudy, orthanc_with_study

pytestmark = [pytest.mark.integration, pytest.mark.data, pytest.mark.slow]

TOKEN = "viewer-pacs"
FLOAT32_ULP_AT_1 = 2.0**-23  # the same model on the same pixels: at most the last bit differs


@pytest.fixture(scope="module")
def study(
    request: pytest.FixtureRequest, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PacsStudy]:
    require_browser()  # before the PACS and the server start, not after
    with (
        scratch_dir(request, tmp_path_factory, "viewer-pacs") as root,
        orthanc_with_study(data_dir, root) as stored,
    ):
        yield stored


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, study: PacsStudy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with scratch_dir(request, tmp_path_factory, "viewer-pacs-api") as root:
        save_chest_model(root / "models")  # cxr: untrained (plumbing, not finding)
        live = start_server(
            root / "models",
            root / "state",
            root / "uvicorn.log",
            api_tokens={TOKEN: ["predict", "explain"]},
            pacs_dicomweb={"orthanc": study.orthanc.dicomweb_url},
        )
        yield live
        live.stop()


@pytest.fixture()
def browser() -> Iterator[Browser]:
    window = Browser()
    yield window
    window.quit()


def card_state(browser: Browser) -> tuple[dict[str, float], dict[str, str]]:
    """The cxr card's probabilities and the image panel's fields."""
    card = browser.find('.card[data-ref="cxr"]')
    shown = {
        bar.get_attribute("data-class"): float(bar.get_attribute("data-probability"))
        for bar in card.find_elements("css selector", ".bars.clean .bar")
    }
    info = {dd.get_attribute("data-field"): dd.text for dd in browser.find_all("#image-info dd")}
    return shown, info


def test_an_instance_picked_from_a_pacs_study_is_analysed_like_the_uploaded_file(
    server: LiveServer, study: PacsStudy, browser: Browser
) -> None:
    from selenium.webdriver.common.keys import Keys

    radiograph = study.files["RG1_UNCR.dcm"]
    browser.sign_in(server.url, TOKEN)
    assert browser.shown("#pacs-form")
    assert [o.get_attribute("value") for o in browser.find_all("#pacs-name option")] == ["orthanc"]

    # a study the PACS does not hold: the service's 404 in words
    browser.find("#pacs-study").send_keys("1.2.3.4", Keys.ENTER)
    browser.wait(lambda _: "holds no study 1.2.3.4" in browser.find("#pacs-error").text)

    field = browser.find("#pacs-study")
    field.clear()
    field.send_keys(study.study_instance_uid, Keys.ENTER)  # the keyboard submits the form
    browser.wait(lambda _: len(browser.find_all("#pacs-instances li")) == 3)
    assert browser.find("#pacs-status").text == "3 instances in the study."
    rows = {li.get_attribute("data-sop"): li for li in browser.find_all("#pacs-instances li")}
    plan = rows[study.files["rtplan.dcm"].sop_instance_uid]
    assert "not an image (modality RTPLAN)" in plan.text
    assert not plan.find_elements("css selector", "button")  # nothing to analyse: not offered
    row = rows[radiograph.sop_instance_uid]
    assert row.find_element("css selector", ".what").text == "CR · CHEST · #1"

    browser.resize(400, 800)
    overflow = browser.driver.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"the listed study is {overflow} px wider than a 400-px window"
    browser.resize(1280, 800)

    row.find_element("css selector", "button").send_keys(Keys.ENTER)
    browser.wait(lambda _: browser.shown('.card[data-ref="cxr"]'))
    from_pacs, info = card_state(browser)
    assert set(from_pacs) == {"normal", "pneumonia"}
    assert info["Format"] == "dicom"
    assert info["SOP Instance UID"] == radiograph.sop_instance_uid
    assert (info["Modality"], info["Body part"]) == ("CR", "CHEST")
    assert info["From"] == f"PACS orthanc, study {study.study_instance_uid}"
    overlay = browser.find('.card[data-ref="cxr"] img.overlay')
    assert browser.driver.execute_script("return arguments[0].naturalWidth > 0", overlay)
    # the picked file is the form's image now: Analyse (and the attack toggle) reuse it
    assert browser.driver.execute_script("return document.getElementById('image').files[0].name")
    assert (
        browser.find("#image").get_attribute("value").endswith(f"{radiograph.sop_instance_uid}.dcm")
    )
    browser.driver.execute_script("document.getElementById('pacs-form').scrollIntoView()")
    browser.screenshot("analyse-pacs")

    # the same file uploaded: the same card (the browser sent the PACS's bytes as they are)
    browser.find("#image").send_keys(str(radiograph.path))
    browser.find("#analyse-run").click()
    browser.wait(lambda _: "From" not in card_state(browser)[1])
    uploaded, uploaded_info = card_state(browser)
    assert uploaded.keys() == from_pacs.keys()
    for name, p in from_pacs.items():
        assert math.isclose(uploaded[name], p, rel_tol=0, abs_tol=FLOAT32_ULP_AT_1), name
    assert {k: v for k, v in info.items() if k != "From"} == uploaded_info

    assert browser.console_errors(lambda m: "/pacs/" in m and "status of 404" in m) == []
    assert browser.remote_requests() == []
    assert not [url for url in browser.requests if TOKEN in url]
    assert any(urlsplit(url).path.endswith(radiograph.sop_instance_uid) for url in browser.requests)
