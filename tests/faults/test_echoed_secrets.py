"""A server that echoes the credentials it was sent gets none of them into comfywatch's output.

A stand-in ComfyUI appends, to every string of its ``/system_stats`` (OS, versions, argv, device name and type),
the password of the URL it is watched with, clear and percent-encoded, and the Basic token the daemon sends.
One ``comfywatch run`` watches it with those credentials in its config; ``/probe`` is asked for a second stand-in
with a password of the request's own, echoed the same way. Neither password nor token may appear in
``/metrics``, the status page, its JSON, the probe's answer or ``doctor``'s output; each shows the mask instead,
so the echoed strings did reach them.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from comfywatch.redact import MASK
from tests.conftest import TIMEOUT_FACTOR
from tests.faults.harness import Metrics, Watch, daemon_process, wait_for
from tests.faults.hostile import HostileServer, hostile_system_stats

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

USER = "monitor"
#: A "/" and a "+" so that the percent-encoded form differs from the clear one.
PASSWORD, PROBE_PASSWORD = "S3cret/Pass+w0rd", "Pr0be/Only+s3cret"


def _token(password: str) -> str:
    return base64.b64encode(f"{USER}:{password}".encode()).decode()


def _forms(password: str) -> tuple[str, ...]:
    """How a password travels and may be echoed: clear, percent-encoded, inside the Basic token."""
    return password, quote(password, safe=""), _token(password)


def _echo(password: str) -> bytes:
    return hostile_system_stats(text=" " + " ".join(_forms(password)))


def _url(server: HostileServer, password: str) -> str:
    return server.url.replace("://", f"://{USER}:{quote(password, safe='')}@", 1)


@dataclass
class Outputs:
    #: What each output path answered, by name.
    pages: dict[str, str]


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        assert response.status == 200, url
        return await response.text()


def _doctor(url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYWATCH_")}
    done = subprocess.run([sys.executable, "-m", "comfywatch", "doctor", "--url", url], capture_output=True,
                          timeout=120 * TIMEOUT_FACTOR, env={**env, "NO_COLOR": "1"}, check=False)
    return (done.stdout + done.stderr).decode("utf-8")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def outputs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Outputs]:
    watched, probed = await HostileServer().start(), await HostileServer().start()
    watched.system_body, probed.system_body = _echo(PASSWORD), _echo(PROBE_PASSWORD)
    config = (f'[defaults]\ninterval = "1s"\ntimeout = "900ms"\n[[targets]]\nname = "echo"\n'
              f'url = "{_url(watched, PASSWORD)}"\n  [targets.canary]\n  enabled = false\n')
    try:
        async with (daemon_process(tmp_path_factory.mktemp("echoed"), config) as proc,
                    aiohttp.ClientSession() as session):
            watch = Watch(f"{proc.url}/metrics")
            try:
                metrics = await wait_for(watch, lambda m: m.value("comfyui_up", target="echo") == 1.0, timeout=30,
                                         what="the echoing target up")
            finally:
                await watch.close()
            pages = {
                "/metrics": metrics.text,
                "/": await _get(session, f"{proc.url}/"),
                "/targets/echo": await _get(session, f"{proc.url}/targets/echo"),
                "/api/v1/status": await _get(session, f"{proc.url}/api/v1/status"),
                "/probe": await _get(session, f"{proc.url}/probe?target="
                                              f"{quote(_url(probed, PROBE_PASSWORD), safe='')}&module=local"),
            }
        pages["doctor"] = await asyncio.to_thread(_doctor, _url(watched, PASSWORD))
        yield Outputs(pages)
    finally:
        await watched.close()
        await probed.close()


@pytest.mark.parametrize(
    ("page", "shows_server_strings"),
    # The overview lists targets, not their versions or devices.
    [("/metrics", True), ("/", False), ("/targets/echo", True), ("/api/v1/status", True), ("/probe", True),
     ("doctor", True)],
)
async def test_no_echoed_credential_reaches_the_output(outputs: Outputs, page: str, shows_server_strings: bool
                                                       ) -> None:
    """The password (clear, percent-encoded) and the Basic token, of the config and of a probe's own request,
    appear nowhere in the output; where the page shows the server's strings, the mask shows where they were."""
    text = outputs.pages[page]
    for form in (*_forms(PASSWORD), *_forms(PROBE_PASSWORD)):
        assert form not in text, (page, form)
    assert (MASK in text) == shows_server_strings, page


async def test_the_echoed_version_is_kept_with_the_credentials_masked(outputs: Outputs) -> None:
    """The version label keeps what the server sent around the credentials: the mask replaces only them."""
    metrics = Metrics(outputs.pages["/metrics"])
    versions = {labels["version"] for name, labels, _ in metrics.samples if name == "comfyui_info"}
    assert versions == {f"0.3.64 {MASK} {MASK} {MASK}"}, versions
