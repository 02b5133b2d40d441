"""A real headless browser for page tests: Debian's ``chromium`` driven through its ``chromium-driver``.

Nothing here downloads a browser: the WebDriver executable is given to Selenium, which then never runs Selenium
Manager. Every request the page makes and every console message are kept (Chrome's performance and browser
logs), so a test can assert that nothing left the daemon's origin and that the page logged no error.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["Browser", "chromium"]

#: Where Debian installs them (``apt-get install chromium chromium-driver``).
_BROWSERS = ("chromium", "chromium-browser")
_DRIVERS = ("chromedriver", "chromium-driver")


def _find(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/lib/chromium")
        if found:
            return found
    message = f"{' / '.join(names)} not found (apt-get install --no-install-recommends chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so this is an error, not a skip", pytrace=False)
    pytest.skip(message)


class Browser:
    """One headless chromium session with its request and console logs."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def get(self, url: str) -> None:
        self.driver.get(url)

    def requests(self) -> list[str]:
        """URLs the page asked for since the last call (documents, styles, scripts, fetches, images)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def console(self) -> list[dict[str, Any]]:
        """Console messages and page errors since the last call."""
        return list(self.driver.get_log("browser"))

    def color_scheme(self, scheme: str) -> None:
        """Emulate ``prefers-color-scheme: scheme`` (light or dark) for the pages that follow."""
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})

    def screenshot(self, path: Path, width: int = 1440) -> None:
        """A PNG of the whole page at *width* CSS pixels (not only the window)."""
        height = int(self.driver.execute_script(
            "return Math.ceil(document.documentElement.scrollHeight)"))
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": max(height, 200), "deviceScaleFactor": 1,
                                     "mobile": False})
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)


@contextmanager
def chromium(tmp: Path) -> Iterator[Browser]:
    """A headless chromium with a profile of its own under *tmp*, no network but what the page asks for."""
    options = webdriver.ChromeOptions()
    options.binary_location = _find(_BROWSERS)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        # No update checks, sync, component downloads or metrics: every request seen is the page's own.
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-first-run", "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=_find(_DRIVERS), log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    browser = Browser(driver)
    try:
        # The browser's own start-up pages (chrome://new-tab-page …) are not the page under test.
        browser.get("about:blank")
        browser.requests()
        browser.console()
        yield browser
    finally:
        driver.quit()
