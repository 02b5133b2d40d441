"""``comfywatch simulate`` as a real process: port file, answers, admin API, clean stop on SIGTERM, --help."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from comfywatch.sim.cli import main
from comfywatch.sim.cloud.jobs import FAULTS as CLOUD_FAULTS
from comfywatch.sim.faults import FAULT_DESCRIPTIONS, Fault
from tests.sim.conftest import eventually

LOCAL_HEADING = "faults (--fault NAME at start, or POST /_sim/faults on the admin API at run time):"
CLOUD_HEADING = "faults with --cloud:"


@asynccontextmanager
async def _simulate(tmp_path: Path, *args: str) -> AsyncIterator[tuple[dict[str, Any], asyncio.subprocess.Process]]:
    port_file = tmp_path / "sim.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "comfywatch.sim.cli",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: port_file.exists() or process.returncode is not None, timeout=30)
        if process.returncode is not None:
            _, err = await process.communicate()
            raise AssertionError(f"simulator exited {process.returncode}: {err.decode()}")
        yield json.loads(port_file.read_text()), process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)


async def test_cli_writes_port_file_and_serves(tmp_path: Path) -> None:
    """The process prints and writes {url, admin_url}, answers HTTP, honours --fault, exits 0 on SIGTERM."""
    async with _simulate(tmp_path, "--fault", "worker_dead", "--targets", "2") as (info, process):
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert json.loads(line) == info
        async with aiohttp.ClientSession() as http:
            async with http.get(info["url"] + "/api/queue") as response:
                assert await response.json() == {"queue_running": [], "queue_pending": []}
            async with http.get(info["url"] + "/t/1/prompt") as response:
                assert response.status == 200
            async with http.get(info["admin_url"] + "/_sim/state") as response:
                assert (await response.json())["faults"] == ["worker_dead"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_sigterm_does_not_wait_for_requests_a_fault_holds(tmp_path: Path) -> None:
    """Faults hold requests on purpose (slow, stall, huge_body, ws_silent): a stop cuts them off within a couple of
    seconds instead of waiting for aiohttp's default minute."""
    async with (
        _simulate(tmp_path, "--fault", "huge_body") as (info, process),
        aiohttp.ClientSession() as http,
    ):
        # A client that takes the headers of the 2 GiB body and reads no further: its handler waits to write.
        held = await http.get(info["url"] + "/api/queue")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            async with http.get(info["admin_url"] + "/_sim/state") as response:
                if (await response.json())["huge_bodies_active"] == 1:
                    break
            assert loop.time() < deadline, "the huge body never started"
            await asyncio.sleep(0.01)
        started = loop.time()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert loop.time() - started < 5.0
        held.close()


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors exit 2 with a message: --cloud without a key, negative numbers, unknown faults."""
    for argv in (["--cloud"], ["--targets", "-1"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
    assert main(["--port", "0", "--fault", "nope"]) == 2
    assert "unknown fault(s): nope" in capsys.readouterr().err


async def test_cli_cloud_mode(tmp_path: Path) -> None:
    """--cloud serves the simulated Comfy Cloud; the admin API reports its snapshot and switches faults."""
    async with (
        _simulate(tmp_path, "--cloud", "--cloud-api-key", "test-key") as (info, _),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(info["admin_url"] + "/_sim/state") as response:
            assert response.status == 200
            state = await response.json()
        assert state["listening"] is True
        assert "test-key" not in json.dumps(state)
        async with http.post(info["admin_url"] + "/_sim/faults", json={"faults": ["down"]}) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientConnectorError):
            async with http.get(info["url"] + "/api/queue"):
                pass
        async with http.get(info["admin_url"] + "/_sim/info") as response:
            assert (await response.json())["mode"] == "cloud"


def _help_table(lines: list[str], heading: str) -> dict[str, str]:
    """The ``name  description`` lines under ``heading``, up to the next blank line."""
    start = lines.index(heading) + 1
    end = lines.index("", start)
    rows = [line.split(None, 1) for line in lines[start:end]]
    assert all(len(row) == 2 for row in rows), lines[start:end]
    return {name: text for name, text in rows}


def test_help_lists_every_fault_with_its_description() -> None:
    """The installed ``comfywatch simulate --help`` prints every fault of both simulators on one line with its
    catalogue description: a fault added without a description, or left out of the help, fails here."""
    script = Path(sys.executable).with_name("comfywatch")
    result = subprocess.run(
        [str(script), "simulate", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert _help_table(lines, LOCAL_HEADING) == {fault.value: FAULT_DESCRIPTIONS[fault] for fault in Fault}
    assert _help_table(lines, CLOUD_HEADING) == {"down": FAULT_DESCRIPTIONS[Fault.DOWN], **CLOUD_FAULTS}
    assert lines[-1] == "The admin API, and which alert each fault should trigger: docs/simulator.md."
