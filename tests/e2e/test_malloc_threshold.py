"""The daemon fixes glibc's mmap threshold at start, so the large pieces of a ``/metrics`` body go back to the
system once sent, instead of staying in a heap whose threshold glibc raised (unless the environment sets it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.procs import comfywatch_run

pytestmark = pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"),
                                reason="glibc only")

#: A 16 MiB block freed raises glibc's threshold to 16 MiB (and its trim threshold to 32); then 24 pieces of 1 MiB,
#: freed, are what a scrape leaves behind. Prints the MiB of RSS they leave.
RETAINED = """
import sys
from comfywatch.daemon.malloc import fix_mmap_threshold
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
print(fix_mmap_threshold() if sys.argv[1] == "fix" else None)
big = b"x" * (16 << 20)
del big
before = rss()
pieces = [b"x" * (1 << 20) for _ in range(24)]
del pieces
print((rss() - before) / (1 << 20))
"""

CONFIG = '[defaults]\nwebsocket_monitor = false\n[[targets]]\nname = "t"\nurl = "http://127.0.0.1:9"\n'


def _retained(mode: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", RETAINED, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})}, timeout=60 * TIMEOUT_FACTOR)
    fixed, mib = done.stdout.split()
    return fixed, float(mib)


def test_freed_pieces_go_back_to_the_system_with_the_threshold_fixed() -> None:
    fixed, mib = _retained("fix")
    assert fixed == "True"
    assert mib < 4
    # What the daemon would keep without it: the pieces stay in the heap.
    assert _retained("leave")[1] > 20


def test_a_threshold_the_environment_sets_is_left_alone() -> None:
    assert _retained("fix", {"MALLOC_MMAP_THRESHOLD_": str(64 << 20)})[0] == "False"


@pytest.mark.parametrize(("env", "fixed"), [
    ({}, True), ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, False),
])
def test_the_daemon_fixes_it_at_start(tmp_path: Path, env: dict[str, str], fixed: bool) -> None:
    with comfywatch_run(tmp_path, CONFIG, "--log-format", "json", env=env) as daemon:
        pass
    events = [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]
    started = [event for event in events if event.get("event") == "started"]
    assert [event["mmap_threshold_fixed"] for event in started] == [fixed]
