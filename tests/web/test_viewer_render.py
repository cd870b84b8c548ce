"""The Analyse page's image of an upload, in a real headless Chromium against the real stack:
the page shows POST /render's PNG, and the pixels the browser decoded from it are exactly the
ones the service's decode path yields for the file (``training.dicom`` or, for a JPEG,
``training.preprocess.decode_image_bytes``, as ``/predict`` calls them): for DICOM window/level,
MONOCHROME1 inversion, first frame. PNG is lossless and carries no colour profile, so the
comparison is exact (a SHA-256 of the RGBA bytes), plus a check that the image is not blank. A
predict-only token (the page asks /predict, which draws no overlays) sees it too, and with
overlays the opacity slider at 0 leaves this image, not an empty box.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.support.browser import Browser
from tests.support.jobs_stack import Stack
from training.dicom import dicom_to_image, read_dicom
from training.preprocess import decode_image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# JavaScript: the decoded pixels of the <img> at arguments[0], at its natural size
PIXELS_SHOWN = """
const [selector, done] = [arguments[0], arguments[arguments.length - 1]];
const img = document.querySelector(selector);
img.decode().then(async () => {
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", rgba));
  let [low, high] = [255, 0];
  for (let i = 0; i < rgba.length; i += 4) {
    if (rgba[i] < low) low = rgba[i];
    if (rgba[i] > high) high = rgba[i];
  }
  done({ width: canvas.width, height: canvas.height, low, high,
    sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join("") });
}, (error) => done({ error: String(error) }));
"""


def shipped(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data missing?)")
    return Path(path)


def expected(path: Path) -> dict[str, Any]:
    """What the page must show: the service's decoding of the file, as RGBA."""
    data = path.read_bytes()
    image = decode_image_bytes(data) if path.suffix == ".jpg" else dicom_to_image(read_dicom(data))
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    return {
        "width": image.shape[1],
        "height": image.shape[0],
        "low": int(image[..., 0].min()),
        "high": int(image[..., 0].max()),
        "sha256": hashlib.sha256(rgba.tobytes()).hexdigest(),
    }


def analyse(browser: Browser, url: str, token: str, path: Path, model: str) -> None:
    """Sign in, keep only ``model``, analyse ``path``; wait for its card."""
    browser.sign_in(url, token)
    for box in browser.find_all("#model-options input"):
        if box.is_selected() != (box.get_attribute("value") == model):
            box.click()
    browser.find("#image").send_keys(str(path))
    browser.find("#analyse-run").click()
    browser.wait(lambda _: browser.shown(f'.card[data-ref="{model}"]'))


def test_a_predict_only_token_sees_a_monochrome1_radiograph_as_the_service_renders_it(
    web_stack: Stack, browser: Browser
) -> None:
    path = shipped("RG3_UNCR.dcm")  # a real CR, MONOCHROME1, 1760 × 1760
    assert read_dicom(path.read_bytes()).PhotometricInterpretation == "MONOCHROME1"
    analyse(browser, web_stack.url, "viewer-predict", path, "derm-baseline")

    assert not browser.find_all(".card img")  # /predict: no overlays, the preview is the image
    assert browser.shown("#preview")
    assert "MONOCHROME1 inverted" in browser.find(".preview figcaption").text
    shown = browser.driver.execute_async_script(PIXELS_SHOWN, "#preview")
    wanted = expected(path)
    assert shown == wanted
    assert wanted["high"] - wanted["low"] > 100, "a blank or flat image"
    browser.assert_clean()


def test_with_the_overlays_faded_out_the_rendered_image_remains(
    web_stack: Stack, browser: Browser
) -> None:
    from selenium.webdriver.common.keys import Keys

    path = shipped("CT_small.dcm")
    analyse(browser, web_stack.url, "viewer-all", path, "derm-baseline")

    browser.find("#opacity-0").send_keys(Keys.HOME)
    card = '.card[data-ref="derm-baseline"]'
    assert browser.find(f"{card} img.overlay").value_of_css_property("opacity") == "0"
    base = browser.find(f"{card} img.base")
    assert base.is_displayed()
    assert base.get_attribute("src") == browser.find("#preview").get_attribute("src")
    shown = browser.driver.execute_async_script(PIXELS_SHOWN, f"{card} img.base")
    wanted = expected(path)
    assert shown == wanted and wanted["high"] > wanted["low"]
    browser.assert_clean()


@pytest.mark.data
def test_a_jpeg_is_shown_as_the_service_decodes_it_not_as_the_browser_would(
    web_stack: Stack, browser: Browser, data_dir: Path
) -> None:
    path = sorted((data_dir / "ham10000_200x150" / "images").glob("ISIC_*.jpg"))[0]
    analyse(browser, web_stack.url, "viewer-look", path, "derm-baseline")

    assert browser.find(".preview figcaption").text == "As the service decodes it."
    assert browser.find("#preview").get_attribute("src").startswith("blob:")
    shown = browser.driver.execute_async_script(PIXELS_SHOWN, "#preview")
    assert shown == expected(path)
    browser.collect()
    assert sum(urlsplit(url).path == "/render" for url in browser.requests) == 1
    browser.assert_clean()
