"""The status page's HTML from the real daemon watching the real simulators: the pages are valid HTML5 (strict
html5lib parse), and what they print is what the simulators were made to do and what ``/api/v1/status`` says.

States: a healthy server with a CUDA device, one whose jobs run out of GPU memory (its canary fails), one that
refuses connections, and one whose version string is an attack on the page.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp

from comfywatch.errors import Reason, hint_for
from comfywatch.sim.admin import start_sim
from tests.helpers import eventually, running_daemon
from tests.integration.conftest import config_toml, target_toml
from tests.ports import closed_port

# The unit tests' readers of a page: a strict HTML5 parse, cell text as a browser lays it out.
from tests.unit.test_status_html import parse, row_of, rows, text

SVG = "{http://www.w3.org/2000/svg}"
STATUS = '[status]\nhistory_step = "1s"\n\n'
GIB = 1 << 30


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def fleet_rows(doc: ET.Element) -> dict[str, dict[str, str]]:
    """{target: {column heading: cell text}} of the fleet table, in the page's order."""
    return {text(row[0]): row_of(doc, text(row[0])) for row in rows(doc)}


async def fleet_json(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/api/v1/status") as response:
        document: dict[str, Any] = await response.json()
        return document


def settled(document: dict[str, Any]) -> bool:
    states = {t["name"]: t for t in document["targets"]}
    return (states["healthy"]["state"] == "up" and states["refused"]["state"] == "down"
            and states["oom"]["state"] == "degraded" and states["oom"]["jobs_last_hour"]["failed"].get("oom") == 2
            and states["hostile"]["state"] == "up" and states["hostile"]["version"] != "0.3.64")


async def test_the_pages_print_what_the_servers_did(tmp_path: Path) -> None:
    async with await start_sim() as healthy, await start_sim() as oom, await start_sim() as hostile:
        assert healthy.cluster is not None and hostile.cluster is not None
        healthy.cluster.system_stats["devices"] = [{
            "name": "cuda:0 NVIDIA L4 : cudaMallocAsync", "type": "cuda", "index": 0,
            "vram_total": 24 * GIB, "vram_free": 6 * GIB, "torch_vram_total": 0, "torch_vram_free": 0}]
        attack = "<script>alert(1)</script><img src=x onerror=alert(2)>\ud800"
        hostile.cluster.system_stats["system"]["comfyui_version"] = attack
        await oom.set_faults(["oom"])
        refused = f"http://127.0.0.1:{closed_port()}"
        config = STATUS + config_toml(
            target_toml("healthy", healthy.url), target_toml("oom", oom.url, canary="1s"),
            target_toml("refused", refused), target_toml("hostile", hostile.url))
        async with running_daemon(config, tmp_path) as (_, base):
            # Jobs that ended before comfywatch first read the history are not counted: polls first.
            await eventually(lambda: fleet_json(base),
                             lambda d: all(t["state"] != "pending" for t in d["targets"]), what="a first poll")
            for _ in range(2):  # other users' jobs, which fail the same way as the canary's
                await oom.submit(job_ms=5)
            document = await eventually(lambda: fleet_json(base), settled, timeout=20,
                                        what="every target in its state")
            status, page = await get(f"{base}/")
            assert status == 200
            doc = parse(page)
            rows = fleet_rows(doc)
            # Worst first, then by name; the counts over the fleet.
            assert list(rows) == ["refused", "oom", "healthy", "hostile"]
            assert text(doc.find(".//p[@class='counts']")) == "2 up · 1 down · 1 degraded · 0 pending"

            assert rows["refused"]["State"] == f"✗ down connect Hint: {hint_for(Reason.CONNECT, refused)}"
            assert rows["refused"]["Last failure"].startswith("connect (system)")

            assert rows["oom"]["State"].startswith("▲ degraded canary preview-image failing: oom Hint: "
                                                   + hint_for(Reason.OOM, oom.url))
            assert rows["oom"]["Jobs, last hour"] == "2 finished · 2 failed oom ×2"

            assert rows["healthy"]["State"] == "✓ up"
            assert rows["healthy"]["Queue"] == "0 running · 0 pending"
            assert rows["healthy"]["Memory headroom"].startswith("VRAM 25% free · 6.0 GiB of 24.0 GiB RAM ")

            # The hostile version is text on the page, never markup: no element or attribute of its own.
            assert not any(e.tag in {"img"} or e.get("onerror") for e in doc.iter())
            assert [s.get("src") for s in doc.iter("script")] == ["static/status.js?v=" + document["version"]]

            status, page = await get(f"{base}/targets/hostile")
            assert status == 200
            target = parse(page)
            summary = {text(dt): text(dd) for dt, dd in zip(target.iter("dt"), target.iter("dd"), strict=False)}
            assert summary["Version"].startswith("<script>alert(1)</script><img src=x onerror=alert(2)>\ufffd")
            assert not any(e.tag == "img" or e.get("onerror") for e in target.iter())

            # A target's first poll records a point with up alone (up changed): the VRAM chart needs the next one.
            status, page = await eventually(lambda: get(f"{base}/targets/healthy"),
                                            lambda answer: "VRAM free: last" in answer[1], what="a VRAM point")
            target = parse(page)
            charts = {text(f.find("figcaption")): f for f in target.iter("figure")}
            assert list(charts)[:6] == ["Up (up or down)", "Jobs running (jobs)", "Jobs pending (jobs)",
                                        "Poll request latency (seconds)", "VRAM free (bytes)", "RAM free (bytes)"]
            vram = charts["VRAM free (bytes)"].find(f"{SVG}svg")
            assert vram is not None and vram.get("role") == "img"
            assert text(vram.find(f"{SVG}desc")).startswith("VRAM free: last 6.0 GiB, min 6.0 GiB, max 6.0 GiB")

            status, _ = await get(f"{base}/targets/nobody")
            assert status == 404


async def test_any_page_number_gets_a_page(tmp_path: Path) -> None:
    """Whatever ``?page=`` holds (other scripts' digits, signs, huge numbers), the answer is a page, never a 500."""
    config = config_toml(target_toml("refused", f"http://127.0.0.1:{closed_port()}"))
    async with running_daemon(config, tmp_path) as (_, base):
        for query in ("%C2%B2", "%D9%A3", "-1", "1e3", "0", "99999999999", "abc", "%00", "1&page=2"):
            status, page = await get(f"{base}/?page={query}")
            assert status == 200, query
            assert "refused" in page
