"""A headless Chromium for the web viewer's tests: Debian's ``chromium`` driven by Selenium
through Debian's ``chromedriver`` (``scripts/ensure-browser.sh`` installs both; `make test` runs
it). The driver's path is passed explicitly, so Selenium Manager never runs and nothing is
downloaded. :class:`Browser` keeps the browser console and the network (DevTools performance
log) as the test goes, so a test can assert that no console error was logged and that no request
left localhost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WAIT_S = 120  # a CPU request to a 32-px ResNet-50 on a busy 2-core machine, with margin
# a page load is static files from localhost; below Selenium's own 120 s HTTP timeout, so a hang
# fails as a TimeoutException that says what the machine was doing (see Browser.open)
PAGE_LOAD_S = 90
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def require_browser() -> None:
    """Skip (naming the fix) where the browser, its driver or Selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"no headless browser ({', '.join(missing)} missing): run scripts/ensure-browser.sh "
            "as root (`make test` does), or apt-get install chromium chromium-driver"
        )
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[test]'")


class Browser:
    """One Chromium window; ``console`` and ``requests`` grow as :meth:`collect` drains logs."""

    def __init__(self, width: int = 1280, height: int = 800) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            f"--window-size={width},{height}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(PAGE_LOAD_S)
        self.resize(width, height)
        self.console: list[dict[str, Any]] = []
        self.requests: list[str] = []

    def resize(self, width: int, height: int) -> None:
        """Make the page's viewport (not the window around it) ``width`` × ``height``."""
        self.driver.set_window_size(width, height)
        outer_w, outer_h, inner_w, inner_h = self.driver.execute_script(
            "return [outerWidth, outerHeight, innerWidth, innerHeight]"
        )
        self.driver.set_window_size(width + outer_w - inner_w, height + outer_h - inner_h)

    def collect(self) -> None:
        """Move the browser's console and network logs into ``console`` and ``requests``."""
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])

    def console_errors(self, allowed: Callable[[str], bool] = lambda _: False) -> list[str]:
        self.collect()
        severe = [e["message"] for e in self.console if e["level"] == "SEVERE"]
        return [message for message in severe if not allowed(message)]

    def remote_requests(self) -> list[str]:
        """Requests to anything but this machine (data: and blob: URLs never leave it)."""
        self.collect()
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "blob")
            and urlsplit(url).hostname not in LOCAL_HOSTS
        ]

    def assert_clean(
        self, allowed: Callable[[str], bool] = lambda _: False, secret: str = "viewer-"
    ) -> None:
        """No console error (but what ``allowed`` admits), nothing fetched off this machine,
        and no URL holding ``secret``: the token travels in a header, never in a URL."""
        assert self.console_errors(allowed) == []
        assert self.remote_requests() == []
        assert not [url for url in self.requests if secret in url]

    def wait(self, condition: Callable[[Any], Any], timeout_s: float = WAIT_S) -> Any:
        """Poll ``condition`` until it is truthy. An element the page re-rendered between being
        found and being read (the job list redraws every 1.5 s) counts as "not yet", not as a
        failure: the next poll finds the new one."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(
            self.driver,
            timeout_s,
            poll_frequency=0.2,
            ignored_exceptions=[StaleElementReferenceException],
        ).until(condition)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def shown(self, css: str) -> bool:
        found = self.find_all(css)
        return bool(found) and found[0].is_displayed()

    def open(self, url: str) -> None:
        """Load ``url``; a load that hangs fails naming how the server and the machine were."""
        from selenium.common.exceptions import TimeoutException

        try:
            self.driver.get(url)
        except TimeoutException as error:
            raise AssertionError(
                f"{url} did not load in {PAGE_LOAD_S} s; {_machine_state(url)}"
            ) from error

    def sign_in(self, url: str, token: str) -> None:
        """Open the viewer, enter the token in its form, wait until its pages are built."""
        self.open(f"{url}/ui/")
        self.wait(lambda _: self.shown("#token"))
        self.find("#token").send_keys(token)
        self.find("#login-form button[type=submit]").click()
        self.wait(lambda _: self.find_all("body[data-ready]"))

    def download(self, link: Any, folder: Path) -> Path:
        """Click ``link`` (an ``<a download>``) and return the file Chromium saved in
        ``folder``, as a user's click saves it (a page's CSP keeps scripts from reading a
        ``blob:`` URL, rightly, so a test reads the saved file instead)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
        )
        saved = folder / link.get_attribute("download")
        link.click()
        self.wait(lambda _: saved.is_file())  # Chromium renames its .crdownload when done
        return saved

    def screenshot(self, name: str) -> Path:
        """The window as docs/screenshots/<name>.png (the README shows them)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        return path

    def quit(self) -> None:
        self.driver.quit()


def _machine_state(url: str) -> str:
    """The server's /healthz answer and time, the load average and the memory left: what a
    diagnosis of a page that would not load needs first."""
    import time

    import httpx

    started = time.monotonic()
    try:
        health = str(httpx.get(url.split("/ui")[0] + "/healthz", timeout=30).status_code)
    except httpx.HTTPError as error:
        health = repr(error)
    took = time.monotonic() - started
    meminfo = Path("/proc/meminfo")
    available = (
        next(
            (line for line in meminfo.read_text().splitlines() if line.startswith("MemAvailable")),
            "MemAvailable unknown",
        )
        if meminfo.exists()
        else "MemAvailable unknown"
    )
    return (
        f"/healthz answered {health} in {took:.1f} s; load average {os.getloadavg()}; "
        f"{' '.join(available.split())}"
    )
