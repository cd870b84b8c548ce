"""The web viewer in a real headless Chromium against a real stack (uvicorn API, Celery worker,
Redis): a real HAM10000 JPEG through both models and the attack toggle (FGSM, then PGD), a real
DICOM image (a chest model refuses it until overridden), the models page with its columns and an
alias move, a token without the jobs scope, where the token is kept, an unreadable task defaults
file said in words, labels and focus, and a narrow window. Every test also checks the browser
logged no error and sent no request off this machine. The jobs page has test_viewer_jobs.py, the
DICOM preview test_viewer_render.py. The screenshots in docs/screenshots/ are taken here.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.jobs_stack import Stack
from training.task_defaults import TASKS_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALL, LOOK = "viewer-all", "viewer-look"


def overlays(browser: Browser, card) -> dict[str, bool]:
    """The card's overlay images by name, each True when the browser decoded it."""
    return browser.driver.execute_script(
        "return Object.fromEntries([...arguments[0].querySelectorAll('img.overlay')].map("
        "(img) => [img.dataset.overlay, img.complete && img.naturalWidth > 0]))",
        card,
    )


def probabilities(card) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    return {
        bar.get_attribute("data-class"): float(bar.get_attribute("data-probability"))
        for bar in card.find_elements(By.CSS_SELECTOR, ".bars.clean .bar")
    }


def families(api: httpx.Client) -> int:
    return len(api.get("/models").json()["models"])


def cells(browser: Browser, family: str, version: int) -> dict[str, str]:
    """One version's row of a family's table on the Models page, by column heading."""
    from selenium.webdriver.common.by import By

    def texts(element, css: str) -> list[str]:  # textContent: cells scrolled out of view too
        return [e.get_attribute("textContent") for e in element.find_elements(By.CSS_SELECTOR, css)]

    table = browser.find(f'section.family[data-model="{family}"] table')
    headings = texts(table, "thead th")
    for row in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        values = texts(row, "td")
        if values[0] == f"v{version}":
            return dict(zip(headings, values, strict=True))
    raise AssertionError(f"no row v{version} in {family}'s table")


@pytest.fixture(scope="module")
def ham_jpeg(data_dir: Path) -> Path:
    images = sorted((data_dir / "ham10000_200x150" / "images").glob("ISIC_*.jpg"))
    if not images:
        pytest.skip(f"no HAM10000 JPEG under {data_dir / 'ham10000_200x150' / 'images'}")
    return images[0]


@pytest.mark.data
def test_a_ham10000_jpeg_through_both_models_then_attacked(
    web_stack: Stack, browser: Browser, api: httpx.Client, ham_jpeg: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.sign_in(web_stack.url, ALL)
    chosen = [b.get_attribute("value") for b in browser.find_all("#model-options input:checked")]
    # the task's default model, plus the other architecture for comparison
    assert chosen == ["derm:production", "derm-baseline"]

    browser.find("#image").send_keys(str(ham_jpeg))
    browser.find("#analyse-run").click()
    browser.wait(lambda _: len(browser.find_all('.card[data-view="clean"]')) == 2)

    cards = browser.find_all(".card")
    assert [c.get_attribute("data-ref") for c in cards] == ["derm:production", "derm-baseline"]
    shas = [
        api.get("/models/derm/production").json()["weights_sha256"],
        api.get("/models/derm-baseline/latest").json()["weights_sha256"],
    ]
    for card, sha in zip(cards, shas, strict=True):
        shown = probabilities(card)
        assert set(shown) == {"benign", "malignant"}
        assert math.isclose(sum(shown.values()), 1.0, abs_tol=1e-4)  # float32 softmax
        assert card.find_element("css selector", "code.sha").text == sha
    assert overlays(browser, cards[0]) == {"gradcam": True, "attention": True}
    assert overlays(browser, cards[1]) == {"gradcam": True}
    assert browser.find('#image-info dd[data-field="Format"]').text == "jpeg"
    browser.screenshot("analyse")

    # the toggle, by keyboard: the attacked image's prediction and maps replace the clean ones
    browser.find("#view-clean").send_keys(Keys.ARROW_RIGHT)
    browser.wait(lambda _: len(browser.find_all('.card[data-view="attacked"]')) == 2)
    attacked = browser.find_all(".card")
    assert "fgsm ε=2/255" in attacked[0].find_element("css selector", ".verdict.attacked").text
    assert overlays(browser, attacked[0]) == {
        "gradcam_adversarial": True,
        "attention_adversarial": True,
    }
    assert overlays(browser, attacked[1]) == {"gradcam_adversarial": True}
    assert len(attacked[1].find_elements("css selector", ".bars.adversarial .bar")) == 2

    # a larger ε from the slider's keyboard reruns the attack
    browser.find("#epsilon").send_keys(Keys.ARROW_RIGHT)
    browser.wait(
        lambda _: (
            "ε=2.5/255" in browser.find(".card .verdict.attacked").text
            and not browser.find("#analyse-busy").text
        )
    )
    slider = browser.find("#opacity-0")
    slider.send_keys(Keys.HOME)
    assert browser.find(".card img.overlay").value_of_css_property("opacity") == "0"
    slider.send_keys(Keys.END)
    browser.screenshot("analyse-attacked")

    # the other attack of the toggle: PGD at the same ε, as the service reports it ran
    browser.find('#attack option[value="pgd"]').click()
    browser.wait(
        lambda _: (
            "pgd ε=2.5/255" in browser.find(".card .verdict.attacked").text
            and not browser.find("#analyse-busy").text
        )
    )
    attacked = browser.find_all('.card[data-view="attacked"]')
    assert [c.get_attribute("data-ref") for c in attacked] == ["derm:production", "derm-baseline"]
    for card in attacked:
        assert "pgd ε=2.5/255" in card.find_element("css selector", ".verdict.attacked").text
        assert len(card.find_elements("css selector", ".bars.adversarial .bar")) == 2
    assert overlays(browser, attacked[1]) == {"gradcam_adversarial": True}
    browser.assert_clean()


def test_a_dicom_image_a_chest_model_refuses_until_overridden(
    web_stack: Stack, browser: Browser
) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    browser.sign_in(web_stack.url, ALL)
    for box in browser.find_all("#model-options input"):
        if box.is_selected() != (box.get_attribute("value") == "cxr"):
            box.click()

    browser.find("#image").send_keys(path)
    browser.find("#analyse-run").click()
    browser.wait(lambda _: browser.shown("#mismatch"))
    refusal = browser.find("#mismatch").text
    assert "cxr" in refusal and "CT" in refusal and "CHEST" in refusal

    browser.find("#override").click()
    browser.wait(lambda _: browser.shown('.card[data-ref="cxr"]'))
    assert browser.find("#allow-mismatch").is_selected()
    info = {
        field: browser.find(f'#image-info dd[data-field="{field}"]').text
        for field in ("Format", "SOP Instance UID", "Modality")
    }
    assert info == {
        "Format": "dicom",
        "SOP Instance UID": dataset.SOPInstanceUID,
        "Modality": "CT",
    }
    card = browser.find('.card[data-ref="cxr"]')
    assert set(probabilities(card)) == {"normal", "pneumonia"}
    assert overlays(browser, card) == {"gradcam": True}
    browser.screenshot("analyse-dicom")
    # the one error the browser logs is the refused request itself
    browser.assert_clean(allowed=lambda m: "/explain" in m and "status of 422" in m)


def test_the_models_page_lists_the_store_and_an_admin_moves_an_alias(
    web_stack: Stack, browser: Browser, api: httpx.Client
) -> None:
    browser.sign_in(web_stack.url, ALL)
    browser.find('#nav a[data-page="models"]').click()
    count = families(api)
    browser.wait(lambda _: len(browser.find_all("section.family")) == count)
    sha = api.get("/models/cxr/1").json()["weights_sha256"]
    cxr = browser.find('section.family[data-model="cxr"]').text
    assert sha in cxr and "CR/DX, CHEST" in cxr and "baseline" in cxr
    assert "production → v1" in browser.find('section.family[data-model="derm"]').text

    # attention variant, defense and metrics, as the manifests record them
    variant = api.get("/models/derm/1").json()["architecture"]["attention_variant"]
    row = cells(browser, "derm", 1)
    assert row["Attention variant"] == variant
    assert row["Defense"] == "none"  # its training spec records no defense
    assert row["Metrics"] == "none recorded"
    assert cells(browser, "derm-baseline", 1)["Attention variant"] == "—"
    defended = api.get("/models/cxr-at/1").json()
    adversarial = defended["training_spec"]["train"]["adversarial"]
    test = defended["metrics"]["test"]
    row = cells(browser, "cxr-at", 1)
    assert row["Defense"] == f"PGD-AT ε={adversarial['epsilon']:g} steps={adversarial['steps']}"
    assert row["Metrics"] == (
        f"test: accuracy {test['accuracy']:.3f}, balanced {test['balanced_accuracy']:.3f}, "
        f"AUC {test['macro_roc_auc']:.3f} (n={test['n']})"
    )
    browser.screenshot("models")

    assert browser.shown("#alias-form")
    browser.find("#alias-model option[value=derm]").click()
    version = browser.find("#alias-version")
    version.clear()
    version.send_keys("2")
    browser.find("#alias-form button[type=submit]").click()
    browser.wait(lambda _: "now points at v2 (was v1)" in browser.find("#alias-result").text)
    family = 'section.family[data-model="derm"]'
    browser.wait(lambda _: "production → v2" in browser.find(family).text)
    assert api.get("/models/derm").json()["aliases"]["production"] == 2
    # put it back for the other tests
    api.put("/models/derm/aliases/production", json={"version": 1}).raise_for_status()
    browser.assert_clean()


def test_a_token_without_the_jobs_scope_sees_no_job_controls(
    web_stack: Stack, browser: Browser, api: httpx.Client
) -> None:
    browser.sign_in(web_stack.url, LOOK)
    assert "predict, explain" in browser.find("#who").text or "explain, predict" in (
        browser.find("#who").text
    )
    assert not browser.shown('#nav a[data-page="jobs"]')
    assert browser.shown('#nav a[data-page="analyse"]')

    browser.open(f"{web_stack.url}/ui/#jobs")  # the same tab: the token is still held
    browser.wait(lambda _: browser.find_all("body[data-ready]") and browser.shown("#jobs-denied"))
    assert not browser.shown("#evaluation-form") and not browser.shown("#training-form")
    browser.find('#nav a[data-page="models"]').click()
    count = families(api)
    browser.wait(lambda _: len(browser.find_all("section.family")) == count)
    assert not browser.shown("#alias-form")
    browser.collect()
    assert not [url for url in browser.requests if urlsplit(url).path.startswith("/jobs")]
    browser.assert_clean()


def test_the_token_is_kept_in_this_tabs_session_storage_only(
    web_stack: Stack, browser: Browser
) -> None:
    browser.sign_in(web_stack.url, ALL)
    kept = browser.driver.execute_script(
        "return {session: {...sessionStorage}, local: {...localStorage}, cookie: document.cookie}"
    )
    assert kept == {"session": {"medrobust.token": ALL}, "local": {}, "cookie": ""}

    browser.find("#sign-out").click()  # "Forget token": cleared, and the sign-in form again
    browser.wait(lambda _: browser.shown("#token"))
    assert browser.driver.execute_script("return sessionStorage.length") == 0
    browser.assert_clean()


def test_an_unreadable_task_defaults_file_is_said_in_words(
    web_stack: Stack, browser: Browser, api: httpx.Client
) -> None:
    """The page still works on the configured defaults, and says what /session says is wrong."""
    tasks = web_stack.root / "models" / TASKS_FILE
    assert not tasks.exists()
    tasks.write_text("{ not a task defaults file")
    try:
        problem = api.get("/session").json()["task_defaults_error"]
        browser.sign_in(web_stack.url, ALL)
        warning = browser.find("#session-warning")
        said = warning.text
        first = browser.find("#model-options input:checked").get_attribute("value")
    finally:
        tasks.unlink()
    assert problem and TASKS_FILE in problem
    assert said == f"Task defaults are incomplete: {problem}"
    assert warning.get_attribute("role") == "alert"
    assert first == "derm:production"  # MEDROBUST_DEFAULT_MODELS still applies
    browser.assert_clean()


@pytest.mark.data
def test_every_control_is_labelled_focus_is_visible_and_a_narrow_window_fits(
    web_stack: Stack, browser: Browser, ham_jpeg: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.sign_in(web_stack.url, ALL)
    unlabelled = browser.driver.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter((e) => e.type !== 'hidden' && !e.labels.length && !e.getAttribute('aria-label'))"
        ".map((e) => e.id || e.name || e.outerHTML)"
    )
    assert unlabelled == []
    # Tab from the file field (keys sent to a file input would be a file name) to a checkbox
    browser.driver.execute_script("document.getElementById('image').focus()")
    ActionChains(browser.driver).send_keys(Keys.TAB).perform()
    assert browser.driver.switch_to.active_element.get_attribute("id") == "model-0"
    outline = browser.driver.execute_script(
        "return getComputedStyle(document.activeElement).outlineStyle"
    )
    assert outline not in ("", "none")

    browser.resize(400, 800)
    browser.find("#image").send_keys(str(ham_jpeg))
    browser.find("#analyse-run").click()
    browser.wait(lambda _: len(browser.find_all('.card[data-view="clean"]')) == 2)
    browser.screenshot("analyse-narrow")
    for page in ("analyse", "models", "jobs"):
        browser.find(f'#nav a[data-page="{page}"]').click()
        browser.wait(lambda _, page=page: browser.shown(f"#page-{page}"))
        overflow = browser.driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the {page} page is {overflow} px wider than a 400-px window"
    browser.assert_clean()
