"""The status page in a real browser: ``comfywatch run`` watching simulators in several states, chromium loading
the fleet view and a target's view.

It checks what only a browser can: no request leaves the daemon's origin (the page works offline), the page logs
no console error, the script refreshes ``<main>`` in place without reloading the page, and the page fits a
phone's width. Screenshots in light and dark are written to the test's directory; with
``COMFYWATCH_UPDATE_SCREENSHOTS=1`` also to ``docs/images/`` (what docs/status-page.md shows).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.browser import Browser, chromium
from tests.e2e.procs import Proc, comfywatch_run, simulate
from tests.e2e.promstack import wait_until
from tests.ports import closed_port

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
API_KEY = "comfyui-browser-test-key"


#: What a careful operator puts in the web config: the page must work under it (no inline script or style, nothing
#: from elsewhere). A violation is a console error.
CSP = "default-src 'self'"


def _config(healthy: Proc, failing: Proc, cloud: Proc, key_file: Path, tmp: Path) -> str:
    web_config = tmp / "web-config.yml"
    web_config.write_text(f'http_server_config:\n  headers:\n    Content-Security-Policy: "{CSP}"\n',
                          encoding="utf-8")
    return f"""
state_dir = "{tmp / 'state'}"
[server]
web_config_file = "{web_config}"
[defaults]
interval = "1s"
timeout = "500ms"
[status]
history_step = "1s"
[[targets]]
name = "gpu-a"
url = "{healthy.url}"
labels = {{ site = "studio" }}
  [targets.canary]
  interval = "2s"
  timeout = "5s"
[[targets]]
name = "gpu-b"
url = "{failing.url}"
  [targets.canary]
  interval = "2s"
  timeout = "5s"
[[targets]]
name = "gpu-c"
url = "http://127.0.0.1:{closed_port()}"
  [targets.canary]
  enabled = false
[[targets]]
name = "cloud"
kind = "cloud"
url = "{cloud.url}"
api_key_file = "{key_file}"
max_requests_per_minute = 6000
  [targets.canary]
  enabled = false
"""


def _settled(base: str) -> dict[str, Any] | None:
    """The fleet once every target shows the state its simulator was set up for, with history to draw."""
    fleet: dict[str, Any] = httpx.get(f"{base}/api/v1/status", timeout=5).json()
    states = {t["name"]: t for t in fleet["targets"]}
    if len(states) < 4:
        return None
    ready = (
        states["gpu-a"]["state"] == "up" and (states["gpu-a"]["canary"] or {}).get("ok") is True
        and states["gpu-b"]["state"] == "degraded" and states["gpu-b"]["jobs_last_hour"]["failed"].get("oom")
        and states["gpu-c"]["state"] == "down"
        and states["cloud"]["state"] == "degraded"
    )
    if not ready:
        return None
    detail = httpx.get(f"{base}/api/v1/targets/gpu-a", timeout=5).json()
    up_points = next(s["points"] for s in detail["series"] if s["name"] == "up")
    # Half a minute of history, so the charts (and the screenshots of them) have lines to draw.
    return fleet if len(up_points) >= 30 else None


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("status-browser")
    key_file = tmp / "key"
    key_file.write_text(API_KEY, encoding="utf-8")
    with (
        simulate(tmp) as healthy,
        simulate(tmp, "--fault", "oom", "--load-per-min", "120", "--job-ms", "50") as failing,
        simulate(tmp, "--cloud", "--cloud-api-key", API_KEY, "--fault", "inactive_subscription") as cloud,
        comfywatch_run(tmp, _config(healthy, failing, cloud, key_file, tmp)) as run,
    ):
        wait_until(lambda: _settled(run.url), timeout=60 * TIMEOUT_FACTOR, what="every target in its state")
        yield run.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("chromium")) as session:
        yield session


def _same_origin(base: str, urls: list[str]) -> list[str]:
    """The URLs among *urls* that leave *base*'s origin (data: URLs never leave the page)."""
    origin = urlsplit(base)
    return [url for url in urls if not url.startswith("data:")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)]


def _errors(browser: Browser) -> list[dict[str, Any]]:
    return [entry for entry in browser.console() if entry["level"] in {"SEVERE", "WARNING"}]


def _save(browser: Browser, tmp: Path, name: str) -> None:
    path = tmp / f"{name}.png"
    browser.screenshot(path)
    assert path.stat().st_size > 10_000, "a screenshot of a blank page"
    if os.environ.get("COMFYWATCH_UPDATE_SCREENSHOTS"):
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / path.name)


def test_fleet_view_in_a_browser(daemon: str, browser: Browser, tmp_path: Path) -> None:
    """The fleet view lists the four targets worst first, asks nothing of any other origin and logs no error."""
    browser.get(f"{daemon}/")
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    names = [row.find_element(By.CSS_SELECTOR, "a").text for row in rows]
    assert names == ["gpu-c", "cloud", "gpu-b", "gpu-a"]
    assert "down" in rows[0].text and "connect" in rows[0].text
    assert "1 up" in browser.driver.find_element(By.TAG_NAME, "main").text
    assert httpx.get(f"{daemon}/").headers["Content-Security-Policy"] == CSP
    requests = browser.requests()
    assert any(url.endswith(".css") or ".css?" in url for url in requests)
    assert _same_origin(daemon, requests) == []
    assert _errors(browser) == []
    for scheme in ("light", "dark"):
        browser.color_scheme(scheme)
        _save(browser, tmp_path, f"status-fleet-{scheme}")
    # The themes differ: the page's background follows prefers-color-scheme.
    backgrounds = []
    for scheme in ("light", "dark"):
        browser.color_scheme(scheme)
        backgrounds.append(browser.script("return getComputedStyle(document.body).backgroundColor"))
    assert backgrounds[0] != backgrounds[1]
    browser.color_scheme("light")


def test_target_view_in_a_browser(daemon: str, browser: Browser, tmp_path: Path) -> None:
    """A target's page draws its charts as inline SVG with text alternatives; nothing from elsewhere, no error."""
    browser.get(f"{daemon}/")
    browser.requests()
    link = browser.driver.find_element(By.LINK_TEXT, "gpu-a")
    link.click()
    assert urlsplit(browser.driver.current_url).path == "/targets/gpu-a"
    charts = browser.driver.find_elements(By.CSS_SELECTOR, "main svg[role='img']")
    assert len(charts) >= 5
    for chart in charts:
        assert chart.find_element(By.TAG_NAME, "title").get_attribute("textContent")
        assert chart.size["width"] > 0 and chart.size["height"] > 0
    assert _same_origin(daemon, browser.requests()) == []
    assert _errors(browser) == []
    for scheme in ("light", "dark"):
        browser.color_scheme(scheme)
        _save(browser, tmp_path, f"status-target-{scheme}")
    browser.color_scheme("light")


def test_the_page_refreshes_in_place(daemon: str, browser: Browser) -> None:
    """The script swaps ``<main>`` for a newer one without reloading the document (no flicker, scroll kept)."""
    browser.get(f"{daemon}/targets/gpu-a")
    browser.script("window.loadedOnce = true")
    first = browser.script("return document.querySelector('footer time, main time').getAttribute('datetime')")

    def refreshed() -> bool:
        now = browser.script("return document.querySelector('footer time, main time').getAttribute('datetime')")
        return bool(now != first)

    wait_until(refreshed, timeout=40 * TIMEOUT_FACTOR, what="a refresh of the page's content")
    assert browser.script("return window.loadedOnce") is True, "the document was reloaded, not refreshed in place"
    assert _same_origin(daemon, browser.requests()) == []
    assert _errors(browser) == []


def test_the_refresh_waits_while_text_is_selected(daemon: str, browser: Browser) -> None:
    """A selection in ``<main>`` holds the refresh back (replacing the text would drop it), and the page says so;
    once the selection goes, the next refresh brings the page up to date and the notice goes too."""
    browser.get(f"{daemon}/targets/gpu-a")
    generated = "return document.querySelector('main time').getAttribute('datetime')"
    first = browser.script(generated)
    browser.script("var range = document.createRange();"
                   "range.selectNodeContents(document.querySelector('main h2'));"
                   "getSelection().removeAllRanges(); getSelection().addRange(range);")
    notice = "return document.getElementById('live').textContent"
    wait_until(lambda: "paused" in browser.script(notice), timeout=40 * TIMEOUT_FACTOR, what="the pause notice")
    assert browser.script(generated) == first
    assert browser.script("return getSelection().toString()")
    browser.script("getSelection().removeAllRanges()")
    wait_until(lambda: browser.script(generated) != first, timeout=40 * TIMEOUT_FACTOR, what="a refresh")
    assert browser.script(notice) == ""
    assert _errors(browser) == []


def test_the_fleet_view_fits_a_phone(daemon: str, browser: Browser) -> None:
    """At a phone's width the document itself does not scroll sideways: the wide table scrolls in its own box,
    and a refresh keeps that box where the reader scrolled it."""
    browser.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        browser.get(f"{daemon}/")
        overflow = browser.script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1
        box = "document.querySelector('main .table-wrap')"
        assert browser.script(f"return {box}.scrollWidth > {box}.clientWidth + 200")
        browser.script(f"{box}.scrollLeft = 150")
        first = browser.script("return document.querySelector('main time').getAttribute('datetime')")
        wait_until(lambda: browser.script("return document.querySelector('main time').getAttribute('datetime')")
                   != first, timeout=40 * TIMEOUT_FACTOR, what="a refresh of the page's content")
        assert browser.script(f"return {box}.scrollLeft") == 150
        assert _errors(browser) == []
    finally:
        browser.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
