"""comfywatch.status.html: the status pages, rendered from real target states and read back by parsing.

Every page goes through html5lib in strict mode: any HTML5 parse error fails the test (that is the validator).
:func:`checked` then asserts what every page must be (language, charset, relative assets, unique ids, tables
with captions and scoped headers, charts as images with a title and a text alternative, no inline script,
style or event handler) before each test looks at its own values.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import html5lib
import pytest

from comfywatch import __version__
from comfywatch.errors import Reason, hint_for
from comfywatch.parse.serverlog import ImportFailure
from comfywatch.parse.system import SystemStats, parse_system_stats
from comfywatch.state import TargetState, WorkflowVerdict
from comfywatch.state.history import Event, EventLog
from comfywatch.state.trackers import QueueView
from comfywatch.status import html
from comfywatch.status.model import detail, fleet
from tests.fixtures import load_json

NOW = 1_795_641_200.0
GIB = 1 << 30
SVG = "{http://www.w3.org/2000/svg}"
STATIC = Path(html.__file__).resolve().parent / "static"
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>\ud800\x00\x1b[2J\ufdd0"


# ----------------------------------------------------------------------------------------------------------
# Building states the way the daemon does.


def system(*, vram_free: int = 12 * GIB, vram_total: int = 24 * GIB, ram_free: int = 48 * GIB,
           ram_total: int = 64 * GIB, version: str = "0.3.64") -> SystemStats:
    """The recorded /system_stats of ComfyUI 0.3.64, on a CUDA device with the given memory."""
    body = load_json("system_stats.json")
    body["system"].update(ram_free=ram_free, ram_total=ram_total, comfyui_version=version)
    body["devices"][0].update(type="cuda", name="cuda:0 NVIDIA L4", vram_free=vram_free, vram_total=vram_total)
    return parse_system_stats(body)


def queue(running: int = 1, pending: int = 2, *, oldest: float = 90.0, stalled: bool = False) -> QueueView:
    return QueueView(running=running, pending=pending, running_prompt_id="p1" if running else None,
                     running_seconds=30.0 if running else 0.0, oldest_pending_seconds=oldest, stalled=stalled,
                     worker_not_consuming=False)


def target(name: str, *, kind: str = "local", url: str = "http://10.0.0.7:8188",
           labels: dict[str, str] | None = None) -> TargetState:
    return TargetState(name, kind, url, endpoints=["system_stats"], labels=labels, history_points=256)


def healthy(name: str, **kwargs: Any) -> TargetState:
    """A target that answered an hour of polls, runs its canary fine and finished three jobs (one OOM)."""
    state = target(name, **kwargs)
    for minute in range(60):
        at = NOW - 3600 + minute * 60
        state.set_up(True, now=at)
        state.apply_system(system(vram_free=(12 + minute % 3) * GIB), None)
        state.apply_queue(queue())
        state.last_latency = 0.02 + minute / 1000
        state.record_history(at)
    state.apply_system(system(), None)
    canary = state.canary("smoke")
    canary.success, canary.runs, canary.last_success_ts = 1.0, 12, NOW - 120
    canary.phases = {"submit": 0.05, "queue": 0.25, "execute": 2.3, "fetch": 0.1, "total": 2.7}
    canary.record_run(NOW - 120)
    state.count_finished_job(None, 1.5, now=NOW - 600)
    state.count_finished_job(None, 1.5, now=NOW - 500)
    state.count_finished_job(Reason.OOM, 1.5, now=NOW - 300)
    return state


def down(name: str, reason: Reason = Reason.CONNECT) -> TargetState:
    state = healthy(name)
    state.set_up(False, reason, now=NOW - 180)
    return state


def degraded(name: str) -> TargetState:
    state = healthy(name)
    state.apply_queue(queue(stalled=True))
    state.import_failures = (ImportFailure("ComfyUI-Broken-Pack", False, "No module named 'x'"),)
    canary = state.canary("smoke")
    canary.success, canary.last_reason = 0.0, Reason.TIMEOUT
    canary.record_run(NOW - 60)
    return state


def cloud_account(name: str = "cloud-team") -> TargetState:
    """A Comfy Cloud account whose balance fell from $100 to $90 over the last hour."""
    state = target(name, kind="cloud", url="https://cloud.comfy.org")
    assert state.cloud is not None
    for minute in range(61):
        state.set_up(True, now=NOW - 3600 + minute * 60)
        state.cloud.balance_usd = 100.0 - minute / 6
        state.record_history(NOW - 3600 + minute * 60)
    state.cloud.has_funds, state.cloud.subscription_active = 1.0, 1.0
    state.cloud.subscription_tier, state.cloud.subscription_status = "creator", "active"
    state.cloud.max_concurrent_jobs = 3.0
    return state


# ----------------------------------------------------------------------------------------------------------
# Reading pages back.


def parse(page: str) -> ET.Element:
    """The page's tree; any HTML5 parse error raises."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    return parser.parse(page)  # type: ignore[no-any-return]


#: Elements a browser sets on lines of their own: their words never run into their neighbours'.
BLOCKS = frozenset({"br", "caption", "dd", "div", "dt", "figcaption", "figure", "h1", "h2", "li", "nav", "p",
                    "section", "td", "th", "tr", "ul"})


def _words(element: ET.Element) -> Iterator[str]:
    if not isinstance(element.tag, str) or element.tag.startswith(SVG):
        return  # a drawing's words are its title and desc, read on their own
    block = element.tag in BLOCKS
    if block:
        yield " "
    yield element.text or ""
    for child in element:
        yield from _words(child)
        yield child.tail or ""
    if block:
        yield " "


def text(element: ET.Element | None) -> str:
    """The words a reader sees in *element* (drawings left out), whitespace collapsed."""
    assert element is not None
    if isinstance(element.tag, str) and element.tag.startswith(SVG):
        return re.sub(r"\s+", " ", "".join(element.itertext())).strip()
    return re.sub(r"\s+", " ", "".join(_words(element))).strip()


def by_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in (e.get("class") or "").split()]


def rows(root: ET.Element) -> list[ET.Element]:
    table = next(t for t in root.iter("table") if "fleet" in (t.get("class") or ""))
    body = table.find("tbody")
    assert body is not None
    return body.findall("tr")


def row_of(root: ET.Element, name: str) -> dict[str, str]:
    """The fleet row of target *name*, as {column heading: cell text}."""
    table = next(t for t in root.iter("table") if "fleet" in (t.get("class") or ""))
    headings = [text(th) for th in table.iter("th") if th.get("scope") == "col"]
    for row in rows(root):
        cells = list(row)
        if text(cells[0]) == name:
            return dict(zip(headings, (text(cell) for cell in cells), strict=True))
    raise AssertionError(f"no row for {name}")


def row_element(root: ET.Element, name: str) -> ET.Element:
    return next(row for row in rows(root) if text(row[0]) == name)


def checked(page: str, *, root_path: str) -> ET.Element:
    """Parse *page* and assert what every status page must be; *root_path* is "" or "../"."""
    page.encode("utf-8")  # what aiohttp does with it: a lone surrogate would raise
    assert page.startswith("<!doctype html>")
    doc = parse(page)
    assert doc.get("lang") == "en"
    head = doc.find("head")
    assert head is not None
    assert head[0].tag == "meta" and head[0].get("charset") == "utf-8"
    metas = {m.get("name"): m.get("content") for m in head.iter("meta") if m.get("name")}
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    assert text(head.find("title"))
    links = {link.get("rel"): link.get("href") for link in head.iter("link")}
    assert links == {"icon": f"{root_path}static/favicon.svg?v={__version__}",
                     "stylesheet": f"{root_path}static/status.css?v={__version__}"}
    scripts = list(doc.iter("script"))
    assert [(s.get("src"), s.get("defer"), text(s) if s.text else "") for s in scripts] == [
        (f"{root_path}static/status.js?v={__version__}", "", "")]
    noscript = head.find("noscript")
    assert noscript is not None
    refresh = noscript.find("meta")
    assert refresh is not None and refresh.get("http-equiv") == "refresh" and refresh.get("content") == "30"
    # A strict CSP (default-src 'self') would refuse any of these.
    assert not list(doc.iter("style"))
    for element in doc.iter():
        names = set(element.attrib)
        assert not {n for n in names if n.lower().startswith("on")}, element.tag
        assert "style" not in names, element.tag
    # Unique ids, and every reference to one points at one.
    ids = [e.get("id") for e in doc.iter() if e.get("id")]
    assert len(ids) == len(set(ids))
    for element in doc.iter():
        for attribute in ("aria-labelledby", "aria-describedby"):
            for ref in (element.get(attribute) or "").split():
                assert ref in ids, (attribute, ref)
    # Tables: a caption, and every header cell scoped.
    for table in doc.iter("table"):
        assert table[0].tag == "caption" and text(table[0])
        headers = list(table.iter("th"))
        assert headers and all(th.get("scope") in {"col", "row"} for th in headers)
    # Charts: images with a title and a text alternative, both referenced.
    for drawing in doc.iter(f"{SVG}svg"):
        assert drawing.get("role") == "img"
        title, desc = drawing.find(f"{SVG}title"), drawing.find(f"{SVG}desc")
        assert title is not None and desc is not None and text(title) and text(desc)
        assert drawing.get("aria-labelledby") == title.get("id")
        assert drawing.get("aria-describedby") == desc.get("id")
    # Links stay on this site, relative to the page (a reverse proxy may serve it under a prefix); the one
    # exception is the empty icon, which keeps browsers from asking for a /favicon.ico that is not there.
    for element in doc.iter():
        for attribute in ("href", "src"):
            link = element.get(attribute)
            if link is not None and not (element.tag == "link" and element.get("rel") == "icon"):
                assert not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^/", link), link
    # The footer: when, and which comfywatch.
    footer = text(doc.find(".//footer"))
    assert f"comfywatch {__version__}" in footer
    times = [t.get("datetime") for t in doc.find(".//footer").iter("time")]  # type: ignore[union-attr]
    assert times == ["2026-11-25T21:13:20Z"]
    return doc


def main(doc: ET.Element) -> ET.Element:
    element = doc.find(".//main")
    assert element is not None
    return element


# ----------------------------------------------------------------------------------------------------------
# The fleet page.


def test_healthy_target_row_shows_its_queue_memory_canary_and_jobs() -> None:
    doc = checked(html.render_fleet(fleet([healthy("gpu-a")], NOW)), root_path="")
    row = row_of(doc, "gpu-a")
    assert row["Kind"] == "local"
    assert row["State"] == "✓ up"
    assert row["Queue"] == "1 running · 2 pending oldest waiting 1.5 min"
    assert row["Memory headroom"] == "VRAM 50% free · 12.0 GiB of 24.0 GiB RAM 75% free · 48.0 GiB of 64.0 GiB"
    assert row["Canary"] == "smoke ✓ ok · 2 min ago"
    assert row["Jobs, last hour"] == "3 finished · 1 failed oom ×1"
    assert row["Last failure"] == f"oom (job) · 5 min ago Hint: {hint_for(Reason.OOM, 'http://10.0.0.7:8188')}"
    assert "Comfy Cloud" not in row  # no Cloud account in this fleet
    cells = row_element(doc, "gpu-a")
    link = cells[0].find("a")
    assert link is not None and link.get("href") == "targets/gpu-a"
    (bar,) = [s for s in cells.iter(f"{SVG}svg") if "phase-bar" in (s.get("class") or "")]
    assert text(bar.find(f"{SVG}title")) == (
        "Canary phases: submit 50 ms, queue 250 ms, execute 2.3 s, fetch 100 ms (total 2.7 s)")
    meters = [s for s in cells.iter(f"{SVG}svg") if "meter" in (s.get("class") or "")]
    assert [text(m.find(f"{SVG}desc")) for m in meters] == ["50% free", "75% free"]
    relative = cells.find(".//time")
    assert relative is not None and relative.get("title") == "2026-11-25 21:11:20 UTC"


def test_counts_links_and_generated_time() -> None:
    states = [healthy("gpu-a"), healthy("gpu-b"), down("gpu-c"), degraded("gpu-d"), target("gpu-e")]
    doc = checked(html.render_fleet(fleet(states, NOW)), root_path="")
    assert text(by_class(doc, "counts")[0]) == "2 up · 1 down · 1 degraded · 1 pending"
    hrefs = {a.get("href") for a in doc.iter("a")}
    assert {"metrics", "api/v1/status"} <= hrefs
    assert text(by_class(doc, "as-of")[0]) == "As of 2026-11-25 21:13:20 UTC"
    assert text(doc.find(".//title")) == "comfywatch: 1 down, 1 degraded"
    assert text(doc.find(".//caption")) == "Targets 1–5 of 5, worst first"
    assert doc.find(".//*[@id='live'][@role='status']") is not None  # where status.js says "stale"


def test_down_target_shows_its_reason_and_hint() -> None:
    doc = checked(html.render_fleet(fleet([down("gpu-a", Reason.CONNECT)], NOW)), root_path="")
    state = row_of(doc, "gpu-a")["State"]
    assert state == f"✗ down connect Hint: {hint_for(Reason.CONNECT, 'http://10.0.0.7:8188')}"
    assert "10.0.0.7:8188" in state  # the hint names the target's own address
    assert row_element(doc, "gpu-a").get("class") == "row-down"
    # The same hint is not printed twice in a row.
    assert row_of(doc, "gpu-a")["Last failure"] == "connect (system) · 3 min ago"


def test_degraded_target_lists_its_problems_with_hints() -> None:
    doc = checked(html.render_fleet(fleet([degraded("gpu-a")], NOW)), root_path="")
    cell = row_element(doc, "gpu-a")[2]
    assert text(cell.find("span")) == "▲ degraded"
    problems = [text(li) for li in cell.iter("li")]
    assert problems == [
        "queue stalled: a job has run 30 s without progress",
        f"canary smoke failing: timeout Hint: {hint_for(Reason.TIMEOUT, 'http://10.0.0.7:8188')}",
        "1 custom node pack(s) failed to import: ComfyUI-Broken-Pack",
    ]
    assert row_of(doc, "gpu-a")["Canary"] == "smoke ✗ failing: timeout · 1 min ago"


def test_many_problems_are_cut_in_the_fleet_row_but_listed_on_the_target_page() -> None:
    state = degraded("gpu-a")
    state.workflows = tuple(WorkflowVerdict(f"workflow-{i}", (("missing_node_type", 1),)) for i in range(12))
    doc = checked(html.render_fleet(fleet([state], NOW)), root_path="")
    items = [text(li) for li in row_element(doc, "gpu-a")[2].iter("li")]
    assert len(items) == html.MAX_PROBLEMS_ROW + 1 and items[-1] == "and 11 more"
    page = checked(html.render_target(detail(state, NOW)), root_path="../")
    assert len(list(by_class(page, "problems")[0].iter("li"))) == 15


def test_pending_target() -> None:
    doc = checked(html.render_fleet(fleet([target("gpu-new")], NOW)), root_path="")
    row = row_of(doc, "gpu-new")
    assert row["State"] == "○ pending not polled yet"
    assert row["Queue"] == row["Memory headroom"] == row["Canary"] == row["Last failure"] == "—"
    assert row["Jobs, last hour"] == "0 finished · 0 failed"


def test_rows_are_worst_first_then_by_name() -> None:
    states = [healthy("a-up"), target("b-pending"), down("c-down"), degraded("d-degraded"), down("a-down"),
              healthy("0-up")]
    doc = checked(html.render_fleet(fleet(states, NOW)), root_path="")
    assert [text(row[0]) for row in rows(doc)] == ["a-down", "c-down", "d-degraded", "b-pending", "0-up", "a-up"]
    assert [row.get("class") for row in rows(doc)] == [
        "row-down", "row-down", "row-degraded", "row-pending", "row-up", "row-up"]
    # The target's cell is the row's header.
    assert all(row[0].tag == "th" and row[0].get("scope") == "row" for row in rows(doc))


def test_cloud_account_shows_balance_days_left_and_subscription() -> None:
    account = cloud_account()
    status = fleet([account, healthy("gpu-a")], NOW)
    summary = status.targets[0].cloud
    assert summary is not None and summary.days_left is not None and summary.burn_usd_per_day is not None
    assert summary.burn_usd_per_day == pytest.approx(240.0, rel=1e-3)  # $10 an hour
    doc = checked(html.render_fleet(status), root_path="")
    assert row_of(doc, "cloud-team")["Comfy Cloud"] == "$90.00 left: 0.4 days at $240.00/day creator · active"
    assert row_of(doc, "gpu-a")["Comfy Cloud"] == "—"


def test_cloud_account_without_enough_history_says_so() -> None:
    account = target("cloud-new", kind="cloud", url="https://cloud.comfy.org")
    assert account.cloud is not None
    account.set_up(True, now=NOW)
    account.cloud.balance_usd = 5.0
    doc = checked(html.render_fleet(fleet([account], NOW)), root_path="")
    assert row_of(doc, "cloud-new")["Comfy Cloud"] == "$5.00 left: — —"


def test_fleet_events_table_at_the_bottom() -> None:
    log = EventLog()
    log.add(Event(NOW - 900, "reload"))
    log.add(Event(NOW - 300, "reload_failed"))
    log.add(Event(NOW - 200, "reload_failed"))
    doc = checked(html.render_fleet(fleet([healthy("gpu-a")], NOW, events=log, reload_success=False)), root_path="")
    section = by_class(doc, "fleet-events")[0]
    assert list(main(doc))[-1] is section
    table = section.find(".//table")
    assert table is not None
    assert [text(th) for th in table.iter("th")] == ["Time", "What", "Reason", "Hint", "Times"]
    assert [[text(td) for td in tr] for tr in table.iter("tr")][1:] == [
        ["3 min ago", "reload failed, old configuration kept", "—", "—", "×2"],
        ["15 min ago", "configuration reloaded", "—", "—", "×1"],
    ]
    assert "reload failed" in text(by_class(doc, "banner")[0])


# ----------------------------------------------------------------------------------------------------------
# Pagination.


@pytest.fixture(scope="module")
def big_fleet_page() -> Iterator[tuple[list[str], dict[int, str]]]:
    """1000 targets, each as heavy as a row gets in practice: degraded for several reasons with hints, three
    failing canaries, both memory meters, jobs failing for five reasons, a Cloud column."""
    states = []
    for index in range(1000):
        kind = "cloud" if index % 10 == 0 else "local"
        state = target(f"gpu-node-{index:04d}.rack-{index % 40:02d}.example", kind=kind,
                       url=f"http://10.0.{index // 250}.{index % 250}:8188")
        state.set_up(True, now=NOW - 100)
        state.apply_system(system(), None)
        state.apply_queue(QueueView(1, 7, "p", 700.0, 300.0, True, True))
        for name in ("smoke", "sdxl", "flux"):
            canary = state.canary(name)
            canary.success, canary.last_reason = 0.0, Reason.TIMEOUT
            canary.phases = {"submit": 0.05, "queue": 0.2, "execute": 2.3, "fetch": 0.1, "total": 2.65}
            canary.record_run(NOW - 120)
        for check in ("queue", "jobs", "catalog"):
            state.check(check).last_reason = Reason.SERVER_ERROR
        state.workflows = tuple(WorkflowVerdict(f"wf-{k}", (("missing_node_type", 1),)) for k in range(10))
        for reason in (Reason.OOM, Reason.LOST, Reason.EXECUTION_ERROR, Reason.INTERRUPTED, Reason.PAYMENT):
            state.count_finished_job(reason, 1.0, now=NOW - 30)
        if state.cloud is not None:
            state.cloud.balance_usd, state.cloud.subscription_tier = 12.5, "pro"
        states.append(state)
    status = fleet(states, NOW)
    pages = {page: html.render_fleet(status, page=page) for page in (-3, 0, 1, 2, 5, 10, 11, 999_999)}
    yield [s.name for s in states], pages


def test_a_page_holds_at_most_a_hundred_rows_and_pages_cover_the_fleet(
        big_fleet_page: tuple[list[str], dict[int, str]]) -> None:
    names, pages = big_fleet_page
    seen: list[str] = []
    for number in (1, 2, 5, 10):
        doc = checked(pages[number], root_path="")
        page_rows = [text(row[0]) for row in rows(doc)]
        assert len(page_rows) == html.PAGE_SIZE
        seen += page_rows
        # Counts are over the whole fleet, on every page.
        assert text(by_class(doc, "counts")[0]) == "0 up · 0 down · 1,000 degraded · 0 pending"
        assert text(doc.find(".//caption")) == (
            f"Targets {(number - 1) * 100 + 1:,}–{number * 100:,} of 1,000, worst first")
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert set(seen) <= set(names)


def test_page_numbers_out_of_range_clamp(big_fleet_page: tuple[list[str], dict[int, str]]) -> None:
    _, pages = big_fleet_page
    assert pages[-3] == pages[0] == pages[1]
    assert pages[11] == pages[999_999] == pages[10]


def test_page_navigation_links(big_fleet_page: tuple[list[str], dict[int, str]]) -> None:
    _, pages = big_fleet_page

    def nav(page: str) -> list[tuple[str | None, str | None, str | None, str]]:
        element = parse(page).find(".//nav[@class='pages']")
        assert element is not None
        return [(a.get("href"), a.get("rel"), a.get("aria-current"), text(a)) for a in element.iter("a")]

    assert nav(pages[1]) == [("?page=1", None, "page", "1"), ("?page=2", None, None, "2"),
                             ("?page=3", None, None, "3"), ("?page=10", None, None, "10"),
                             ("?page=2", "next", None, "Next ›")]
    middle = nav(pages[5])
    assert middle[0] == ("?page=4", "prev", None, "‹ Previous")
    assert [label for _, _, _, label in middle[1:-1]] == ["1", "3", "4", "5", "6", "7", "10"]
    assert [current for _, _, current, label in middle if current] == ["page"]
    assert nav(pages[10])[-1] == ("?page=10", None, "page", "10")
    assert "Page 5 of 10" in text(parse(pages[5]).find(".//nav[@class='pages']"))


def test_page_size_stays_bounded(big_fleet_page: tuple[list[str], dict[int, str]]) -> None:
    """Measured: about 375 kB for these heaviest rows (3.7 kB each); a page must stay under 400 kB whatever
    the size of the fleet."""
    _, pages = big_fleet_page
    for page in pages.values():
        assert len(page.encode("utf-8")) < 400_000


def test_single_page_fleet_has_no_navigation() -> None:
    doc = checked(html.render_fleet(fleet([healthy("gpu-a")], NOW), page=3), root_path="")
    assert doc.find(".//nav[@class='pages']") is None
    assert [text(row[0]) for row in rows(doc)] == ["gpu-a"]


def test_empty_fleet() -> None:
    doc = checked(html.render_fleet(fleet([], NOW)), root_path="")
    assert text(by_class(doc, "counts")[0]) == "0 up · 0 down · 0 degraded · 0 pending"
    assert [text(row) for row in rows(doc)] == ["No targets are configured."]


# ----------------------------------------------------------------------------------------------------------
# Hostile strings.


def hostile_target(name: str = "gpu-hostile") -> TargetState:
    """Every string a config or a server can choose, set to an attack (and one to a megabyte)."""
    state = healthy(name, url=f"http://{HOSTILE}:8188/", labels={HOSTILE: HOSTILE, "huge": "x" * 1_000_000})
    state.apply_system(system(version=HOSTILE), None)
    canary = state.canary(HOSTILE)
    canary.success, canary.last_reason = 0.0, Reason.TIMEOUT
    canary.record_run(NOW - 10)
    state.import_failures = (ImportFailure(HOSTILE, False, None), ImportFailure("y" * 1_000_000, False, None))
    state.workflows = (WorkflowVerdict(HOSTILE, (("missing_node_type", 1),)),)
    state.set_up(True, now=NOW)
    return state


#: Every attribute name the renderer writes; an attack that got markup through would add others.
RENDERED_ATTRIBUTES = frozenset({
    "lang", "charset", "name", "content", "http-equiv", "rel", "href", "src", "defer", "id", "class", "role",
    "type", "scope", "colspan", "datetime", "title", "aria-live", "aria-label", "aria-labelledby", "aria-describedby",
    "aria-hidden", "aria-current", "viewBox", "x", "y", "x1", "y1", "x2", "y2", "width", "height", "d", "cx", "cy",
    "r", "text-anchor",
})


def assert_inert(doc: ET.Element) -> None:
    """Nothing the attack wrote became markup: one script (ours), no image, no stray attributes."""
    assert len(list(doc.iter("script"))) == 1
    assert not list(doc.iter("img"))
    written = {name for element in doc.iter() for name in element.attrib}
    assert written <= RENDERED_ATTRIBUTES, written - RENDERED_ATTRIBUTES
    every = "".join(doc.itertext())
    assert "\ud800" not in every and "\x00" not in every and "\x1b" not in every and "\ufdd0" not in every


def test_hostile_strings_are_escaped_on_the_fleet_page() -> None:
    page = html.render_fleet(fleet([hostile_target()], NOW))
    doc = checked(page, root_path="")
    assert_inert(doc)
    problems = text(by_class(doc, "problems")[0])
    # The surrogate and the noncharacter become U+FFFD, the run of controls one space.
    assert "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>\ufffd [2J\ufffd" in problems
    assert len(page.encode("utf-8")) < 30_000  # the megabyte strings were cut


def test_hostile_strings_are_escaped_on_the_target_page() -> None:
    state = hostile_target()
    page = html.render_target(detail(state, NOW))
    doc = checked(page, root_path="../")
    assert_inert(doc)
    summary = {text(dt): dd for dt, dd in zip(doc.iter("dt"), doc.iter("dd"), strict=True)}
    # The target's own URL is text, never a link.
    assert not list(summary["URL"].iter("a"))
    assert text(summary["URL"]).startswith("http://<script>alert(1)</script>")
    labels = [text(li) for li in summary["Labels"].iter("li")]
    assert labels[0].startswith("<script>alert(1)</script>")  # labels sort by key, and "<" comes first
    assert labels[1] == "huge=" + "x" * (400 - 1) + "…"
    assert text(summary["Version"]).startswith("<script>alert(1)</script>\"'><img")
    assert len(page.encode("utf-8")) < 100_000


def test_a_hostile_target_name_is_escaped_and_quoted_in_links() -> None:
    states = [healthy(HOSTILE), healthy("a:b")]
    doc = checked(html.render_fleet(fleet(states, NOW)), root_path="")
    assert_inert(doc)
    links = {text(a): a.get("href") for a in doc.iter("a") if (a.get("href") or "").startswith("targets/")}
    assert links["a:b"] == "targets/a%3Ab"  # not a URL with the scheme "a"
    (hostile_link,) = [href for name, href in links.items() if name.startswith("<script>")]
    assert hostile_link is not None and re.fullmatch(r"targets/[A-Za-z0-9%._~-]+", hostile_link)
    target_doc = checked(html.render_target(detail(states[0], NOW)), root_path="../")
    assert_inert(target_doc)
    assert text(target_doc.find(".//h1")).startswith("<script>alert(1)</script>")


# ----------------------------------------------------------------------------------------------------------
# The target page.


def test_target_page_summary() -> None:
    state = healthy("gpu-a", labels={"site": "berlin", "gpu": "L4"})
    doc = checked(html.render_target(detail(state, NOW)), root_path="../")
    assert text(doc.find(".//h1")) == "gpu-a"
    summary = {text(dt): text(dd) for dt, dd in zip(doc.iter("dt"), doc.iter("dd"), strict=True)}
    assert summary["State"] == "✓ up"
    assert summary["Version"] == "0.3.64"
    assert summary["URL"] == "http://10.0.0.7:8188"
    assert summary["Labels"] == "gpu=L4 site=berlin"
    assert summary["Queue"] == "1 running · 2 pending oldest waiting 1.5 min running job for 30.0 s"
    assert summary["Jobs, last hour"] == "3 finished · 1 failed oom ×1"
    assert summary["Last result"] == "✓ ok · 2 min ago"
    assert summary["Last success"] == "2 min ago"
    assert summary["Runs"] == "12"
    assert summary["Last run's phases"] == "submit 50 ms · queue 250 ms · execute 2.3 s · fetch 100 ms · total 2.7 s"
    back = [a for a in doc.iter("a") if a.get("href") == "../"]
    assert back and text(back[0]) == "← All targets"
    assert {"../metrics", "../api/v1/targets/gpu-a", "../api/v1/status"} <= {a.get("href") for a in doc.iter("a")}


def test_target_page_has_one_chart_per_series_and_canary_charts() -> None:
    state = healthy("gpu-a")
    view = detail(state, NOW)
    doc = checked(html.render_target(view), root_path="../")
    figures = {text(f.find("figcaption")): f for f in doc.iter("figure")}
    assert list(figures) == [
        "Up (up or down)", "Jobs running (jobs)", "Jobs pending (jobs)", "Poll request latency (seconds)",
        "VRAM free (bytes)", "RAM free (bytes)", "Canary smoke: total (seconds)", "Canary smoke: phases (seconds)"]
    assert len(view.series) == 6
    up = figures["Up (up or down)"].find(f"{SVG}svg")
    assert up is not None
    assert text(up.find(f"{SVG}desc")) == "Up: up now; up in 60 of 60 points over the last 60 min, down 0 times."
    vram = figures["VRAM free (bytes)"].find(f"{SVG}svg")
    assert vram is not None
    assert text(vram.find(f"{SVG}desc")) == (
        "VRAM free: last 14.0 GiB, min 12.0 GiB, max 14.0 GiB over the last 60 min (59 points).")
    phases = figures["Canary smoke: phases (seconds)"]
    assert [text(li) for li in phases.iter("li")] == ["Submit", "Queue", "Execute", "Fetch"]


def test_target_page_says_no_data_yet_instead_of_an_empty_chart() -> None:
    state = target("gpu-new")
    state.set_up(True, now=NOW)  # one point: up; nothing else known yet
    doc = checked(html.render_target(detail(state, NOW)), root_path="../")
    figures = {text(f.find("figcaption")): f for f in doc.iter("figure")}
    assert figures["Up (up or down)"].find(f"{SVG}svg") is not None
    for caption in ("Jobs running (jobs)", "VRAM free (bytes)", "RAM free (bytes)"):
        assert figures[caption].find(f"{SVG}svg") is None
        assert text(figures[caption]) == f"{caption} no data yet"


def test_target_page_events_table() -> None:
    state = down("gpu-a", Reason.TIMEOUT)
    state.set_up(True, now=NOW - 120)
    state.set_up(False, Reason.TIMEOUT, now=NOW - 60)
    doc = checked(html.render_target(detail(state, NOW)), root_path="../")
    table = next(t for t in doc.iter("table") if "events" in (t.get("class") or ""))
    body = [[text(td) for td in tr] for tr in table.iter("tr")][1:]
    hint = hint_for(Reason.TIMEOUT, "http://10.0.0.7:8188")
    assert body[:3] == [
        ["1 min ago", "down", "timeout", hint, "×1"],
        ["2 min ago", "back up", "—", "—", "×1"],
        ["3 min ago", "down", "timeout", hint, "×1"],
    ]
    assert ["5 min ago", "a job failed", "oom", hint_for(Reason.OOM, "http://10.0.0.7:8188"), "×1"] in body


def test_target_page_cloud_section() -> None:
    doc = checked(html.render_target(detail(cloud_account(), NOW)), root_path="../")
    section = doc.find(".//section[@aria-labelledby='cloud-h']")
    assert section is not None
    cloud = {text(dt): text(dd) for dt, dd in zip(section.iter("dt"), section.iter("dd"), strict=True)}
    assert cloud["Balance"] == "$90.00"
    assert cloud["Days left"] == "0.4 days at $240.00/day"
    assert cloud["Tier"] == "creator" and cloud["Subscription"] == "active"
    assert cloud["Concurrent jobs allowed"] == "3"
    assert cloud["Rate limited"] == "no"
    figures = [text(f.find("figcaption")) for f in doc.iter("figure")]
    assert "Balance (US dollars)" in figures


# ----------------------------------------------------------------------------------------------------------
# Relative URLs behind a proxy's path prefix.


@pytest.mark.parametrize("prefix", ["http://monitor.example/", "http://monitor.example/comfywatch/"])
def test_relative_urls_resolve_under_any_prefix(prefix: str) -> None:
    state = healthy("gpu-a:1")
    fleet_doc = parse(html.render_fleet(fleet([state], NOW)))
    fleet_links = {urljoin(prefix, a.get("href") or "") for a in fleet_doc.iter("a")}
    target_url = f"{prefix}targets/gpu-a%3A1"
    assert target_url in fleet_links
    assert {f"{prefix}metrics", f"{prefix}api/v1/status"} <= fleet_links
    (stylesheet,) = [link.get("href") or "" for link in fleet_doc.iter("link") if link.get("rel") == "stylesheet"]
    assert urljoin(prefix, stylesheet).startswith(f"{prefix}static/status.css?v=")
    target_doc = parse(html.render_target(detail(state, NOW)))
    target_links = {urljoin(target_url, a.get("href") or "") for a in target_doc.iter("a")}
    assert {prefix, f"{prefix}metrics", f"{prefix}api/v1/targets/gpu-a%3A1"} <= target_links
    script = target_doc.find(".//script")
    assert script is not None
    assert urljoin(target_url, script.get("src") or "").startswith(f"{prefix}static/status.js?v=")


# ----------------------------------------------------------------------------------------------------------
# The stylesheet and the script the pages load.


def test_static_assets_fetch_nothing_from_elsewhere() -> None:
    css = (STATIC / "status.css").read_text(encoding="utf-8")
    script = (STATIC / "status.js").read_text(encoding="utf-8")
    for asset in (css, script):
        assert not re.search(r"https?:|//[a-z]|@import|url\(|@font-face", asset.replace("// ", ""))
    assert "@media (prefers-color-scheme: dark)" in css
    assert "overflow-x: auto" in css  # tables scroll sideways on a phone
    # The one request the script makes: this page, same origin, not from a cache.
    assert re.findall(r"fetch\(([^,]+),", script) == ["window.location.href"]
    assert 'credentials: "same-origin"' in script and 'mode: "same-origin"' in script
    assert 'cache: "no-store"' in script
    assert '"visibilitychange"' in script and "15000" in script


def test_a_young_history_is_drawn_over_its_own_span() -> None:
    """Two minutes of points fill the chart (its axis counts seconds), not the last two pixels of an hour's axis."""
    state = target("gpu-a")
    for second in range(0, 121, 15):
        state.set_up(True, now=NOW - 120 + second)
        state.last_latency = 0.01
        state.record_history(NOW - 120 + second)
    doc = checked(html.render_target(detail(state, NOW)), root_path="../")
    chart = next(f for f in doc.iter("figure") if text(f.find("figcaption")).startswith("Poll request latency"))
    ticks = [text(t) for t in chart.iter(f"{SVG}text") if t.get("class") == "tick" and text(t).startswith("-")]
    assert ticks == ["-120 s", "-90 s", "-60 s", "-30 s"]
    desc = chart.find(f".//{SVG}desc")
    assert desc is not None and "over the last 120 s" in text(desc)
