"""A flood of wrong basic-auth passwords must not starve the right user's scrape of the real daemon.

``comfywatch run`` serves ``/metrics`` behind a ``web-config.yml`` with a cost-10 bcrypt hash (the cost the
exporter-toolkit documents; ~0.1 s per check here). 300 requests with wrong passwords arrive at once while the
authorised scraper, whose credentials were never checked before (cold cache), polls ``/metrics``: it must get
its 200 within :data:`SCRAPE_BOUND_S`, and every flood request must be answered (401, or 503 when bcrypt is
busy), none hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from tests.conftest import TIMEOUT_FACTOR
from tests.faults.harness import daemon_process

pytestmark = pytest.mark.e2e

USER = "prometheus"
PASSWORD = "correct horse battery staple"
FLOOD = 300
SCRAPE_BOUND_S = 2.0
#: Enough for every flood request to be answered, even one bcrypt at a time on a slow machine.
FLOOD_ANSWERED_S = 60.0


def _config(web_config: Path) -> str:
    return (
        f'[server]\nweb_config_file = "{web_config}"\n'
        '[[targets]]\nname = "unreachable"\nurl = "http://127.0.0.1:9"\n'
    )


async def _status(session: aiohttp.ClientSession, url: str, password: str) -> int:
    async with session.get(url, headers={"Authorization": aiohttp.encode_basic_auth(USER, password)}) as response:
        await response.read()
        return response.status


async def _flood(url: str, passwords: Sequence[str], source: str, all_sent: asyncio.Event) -> list[int]:
    """Send every password at once from *source* (a loopback address); the statuses, in order.

    *all_sent* is set once every request is on the wire, so the authorised scrape can be sent behind them.
    """
    sent = 0

    async def _count(*_: object) -> None:
        nonlocal sent
        sent += 1
        if sent == len(passwords):
            all_sent.set()

    tracing = aiohttp.TraceConfig()
    tracing.on_request_headers_sent.append(_count)
    connector = aiohttp.TCPConnector(limit=0, local_addr=(source, 0))
    timeout = aiohttp.ClientTimeout(total=FLOOD_ANSWERED_S * TIMEOUT_FACTOR)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[tracing]) as session:
        return list(await asyncio.gather(*(_status(session, url, password) for password in passwords)))


async def _authorised_scrape_within(url: str, bound: float) -> None:
    """Poll /metrics with the right password until it answers 200; fail if that takes over *bound* seconds."""
    deadline = time.monotonic() + bound
    statuses: list[int | str] = []
    authorised = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}
    async with aiohttp.ClientSession() as session:
        while (left := deadline - time.monotonic()) > 0:
            try:
                async with session.get(
                    url, headers=authorised, timeout=aiohttp.ClientTimeout(total=left)
                ) as response:
                    await response.read()
                    if response.status == 200:
                        return
                    statuses.append(response.status)
            except TimeoutError:
                statuses.append("timeout")
                break
            await asyncio.sleep(0.05)
    raise AssertionError(f"no authorised 200 within {bound:.1f}s; answers meanwhile: {statuses}")


@pytest.mark.parametrize(
    ("distinct", "source"),
    [(False, "127.0.0.1"), (True, "127.0.0.1"), (True, "127.0.0.2")],
    ids=["one-wrong-password", "distinct-wrong-passwords", "distinct-from-another-host"],
)
async def test_authorised_scrape_served_during_wrong_password_flood(
    tmp_path: Path, distinct: bool, source: str
) -> None:
    """The authorised scrape answers 200 within the bound; the flood gets only 401s and 503s, all answered."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web_config = tmp_path / "web-config.yml"
    web_config.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n", encoding="utf-8")
    passwords = [f"wrong-{i}" if distinct else "wrong" for i in range(FLOOD)]
    async with daemon_process(tmp_path, _config(web_config)) as daemon:
        url = f"{daemon.url}/metrics"
        all_sent = asyncio.Event()
        flood = asyncio.create_task(_flood(url, passwords, source, all_sent))
        try:
            sending = asyncio.create_task(all_sent.wait())
            await asyncio.wait([sending, flood], return_when=asyncio.FIRST_COMPLETED)
            if flood.done():
                flood.result()
            await _authorised_scrape_within(url, SCRAPE_BOUND_S * TIMEOUT_FACTOR)
            statuses = await flood
        finally:
            flood.cancel()
        assert set(statuses) <= {401, 503}, sorted(set(statuses))
        assert statuses.count(401) >= 1
        assert PASSWORD not in daemon.output()
