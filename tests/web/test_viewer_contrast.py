"""WCAG 2.1 contrast of the viewer as Chromium renders it, from computed styles: every visible
piece of text (body text, buttons, links, labels, table cells, hints) at least 4.5:1 against the
colour behind it (SC 1.4.3, AA, even where large text would need 3:1 only), and the focus ring of
every control reached by Tab at least 3:1 against the colour around it (SC 1.4.11, non-text
contrast; the ring is drawn outside the control, over its parent's background). Disabled
controls are exempt, as WCAG exempts inactive components. Checked on the sign-in form, on the
Analyse page with a result, and on the Models and Jobs pages.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.browser import Browser
from tests.support.jobs_stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT_RATIO = 4.5
FOCUS_RATIO = 3.0
MAX_TABS = 120  # more stops than any page has: a page that traps focus still ends the walk

# The WCAG formulas (relative luminance of sRGB, (L1 + 0.05) / (L2 + 0.05)) and the colour
# behind an element: its own and its ancestors' backgrounds composed, translucent ones too.
COLOUR_JS = r"""
const parse = (text) => {
  const parts = text.match(/rgba?\(([^)]*)\)/)[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
};
const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3]));
const behind = (element) => {
  const layers = [];
  for (let e = element; e; e = e.parentElement) {
    const colour = parse(getComputedStyle(e).backgroundColor);
    if (colour[3] > 0) layers.push(colour);
    if (colour[3] >= 1) break;
  }
  return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255]);
};
const luminance = (rgb) => {
  const [r, g, b] = rgb.map((v) => {
    const c = v / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
};
const name = (e) => e.tagName.toLowerCase() + (e.id ? `#${e.id}` : "")
  + (typeof e.className === "string" && e.className ? `.${e.className.split(" ").join(".")}` : "");
"""

# Every visible element holding text of its own (not SVG: the charts' text is checked as an
# image would be, by eye), with the contrast of its text colour on what lies behind it.
TEXTS_JS = (
    COLOUR_JS
    + r"""
return [...document.querySelectorAll("body *")].filter((e) =>
  !e.closest("svg, select, [hidden], fieldset:disabled, :disabled")
  && e.checkVisibility({ opacityProperty: true, visibilityProperty: true })
  && [...e.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim())
).map((e) => {
  const colour = parse(getComputedStyle(e).color);
  const background = behind(e);
  return { element: name(e), tag: e.tagName.toLowerCase(), text: e.textContent.trim().slice(0, 40),
    ratio: ratio(over(colour, background), background) };
});
"""
)

# The focused control's ring and the contrast of its colour on what lies around it.
FOCUS_JS = (
    COLOUR_JS
    + r"""
const e = document.activeElement;
if (!e || e === document.body || e.id === "tab-start") return null;
const style = getComputedStyle(e);
const ring = parse(style.outlineColor);
const around = behind(e.parentElement);
return { node: e, element: name(e), style: style.outlineStyle,
  width: parseFloat(style.outlineWidth), ratio: ratio(over(ring, around), around) };
"""
)


START_JS = """
const mark = Object.assign(document.createElement("span"), { id: "tab-start", tabIndex: -1 });
document.body.prepend(mark);
mark.focus();
window.scrollTo(0, 0);
"""


def low_contrast_text(browser: Browser) -> tuple[list[dict[str, Any]], set[str]]:
    """Text elements under 4.5:1, and the tags checked (so a test can see what it covered)."""
    texts = browser.driver.execute_script(TEXTS_JS)
    return [t for t in texts if t["ratio"] < TEXT_RATIO], {t["tag"] for t in texts}


def weak_focus_rings(browser: Browser) -> tuple[list[dict[str, Any]], int]:
    """Tab through the page: rings that are missing, thinner than 2 px or under 3:1, and how
    many controls were reached."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    # Tab moves on from where focus last was: start from a mark before everything else
    browser.driver.execute_script(START_JS)
    seen: list[dict[str, Any]] = []
    first = None
    for _ in range(MAX_TABS):
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
        focused = browser.driver.execute_script(FOCUS_JS)
        node = focused and focused.pop("node")
        if node is None or node == first:
            break  # past the last control, or round to the first again
        first = first or node
        seen.append(focused)
    browser.driver.execute_script("document.getElementById('tab-start')?.remove()")
    weak = [f for f in seen if f["style"] == "none" or f["width"] < 2 or f["ratio"] < FOCUS_RATIO]
    return weak, len(seen)


def check_page(browser: Browser, wanted_tags: set[str], controls: int) -> None:
    """The page's text and focus rings, having seen ``wanted_tags`` and ``controls`` stops."""
    low, tags = low_contrast_text(browser)
    assert low == [], low
    assert wanted_tags <= tags, f"expected {wanted_tags - tags} on the page"
    weak, reached = weak_focus_rings(browser)
    assert weak == [], weak
    assert reached >= controls, f"Tab reached {reached} controls, not the {controls} expected"


def test_text_and_focus_rings_meet_wcag_contrast_on_every_page(
    web_stack: Stack, browser: Browser
) -> None:
    from pydicom.data import get_testdata_file

    browser.open(f"{web_stack.url}/ui/")
    browser.wait(lambda _: browser.shown("#token"))
    check_page(browser, {"h2", "label", "button", "p"}, controls=2)

    browser.sign_in(web_stack.url, "viewer-all")
    for box in browser.find_all("#model-options input"):
        if box.is_selected() != (box.get_attribute("value") == "derm-baseline"):
            box.click()
    browser.find("#image").send_keys(get_testdata_file("CT_small.dcm"))
    browser.find("#analyse-run").click()
    browser.wait(lambda _: browser.shown('.card[data-ref="derm-baseline"]'))
    check_page(browser, {"a", "button", "label", "legend", "p", "dd", "figcaption", "span"}, 15)

    browser.find('#nav a[data-page="models"]').click()
    browser.wait(lambda _: browser.find_all("section.family"))
    check_page(browser, {"a", "button", "label", "h3", "th", "td", "code"}, controls=7)

    browser.find('#nav a[data-page="jobs"]').click()
    browser.wait(lambda _: browser.find_all("#jobs-list table"))
    check_page(browser, {"a", "button", "label", "legend", "caption", "th"}, controls=15)
    browser.assert_clean()
