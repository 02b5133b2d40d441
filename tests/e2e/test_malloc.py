"""On glibc ``comfywatch run`` pins the mmap threshold at start (unless the environment sets it), so the large pieces
of a ``/metrics`` body go back to the system once sent instead of staying in a heap whose threshold glibc
raised; and it caps the arenas at one, so what worker threads free goes back to the heap the event loop uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfywatch.cli.main import main
from comfywatch.config import ConfigError
from comfywatch.daemon import malloc
from comfywatch.daemon.service import Daemon
from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.procs import comfywatch_run

pytestmark = pytest.mark.skipif(malloc.glibc_version() is None, reason="glibc only")

#: Prints whether the threshold was pinned, then the MiB of RSS that freed blocks leave. A 16 MiB block freed
#: raises an unpinned threshold to 16 MiB (and the heap's trim threshold to 32); then 24 pieces of 1 MiB, freed,
#: are what a scrape leaves behind.
PIECES_LEFT = """
import sys
from comfywatch.daemon.malloc import pin_mmap_threshold
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
print(pin_mmap_threshold() if sys.argv[1] == "pin" else None)
big = b"x" * (16 << 20)
del big
before = rss()
pieces = [b"x" * (1 << 20) for _ in range(24)]
del pieces
print((rss() - before) / (1 << 20))
"""

#: Prints whether the arenas were capped; then glibc's statistics (on stderr) list the arenas in use after a
#: worker thread allocated blocks past Python's own small-object allocator.
THREAD_ARENAS = """
import ctypes, sys, threading
from comfywatch.daemon.malloc import cap_arenas
print(cap_arenas() if sys.argv[1] == "cap" else None, flush=True)
def work():
    blocks = [b"x" * 1000 for _ in range(2000)]
    del blocks
worker = threading.Thread(target=work)
worker.start()
worker.join()
ctypes.CDLL(None).malloc_stats()
"""

#: Variables through which the environment would set the threshold or the arenas itself, or put another allocator
#: in glibc's place for Python's blocks.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "PYTHONMALLOC")


def _run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in _USER_SETTINGS}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          env={**clean, **(env or {})}, timeout=60 * TIMEOUT_FACTOR)


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    return _run_python(code, *args, env=env).stdout.split()


def _arenas(*args: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Whether the arenas were capped, and how many the process used."""
    done = _run_python(THREAD_ARENAS, *args, env=env)
    return done.stdout.strip(), sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_freed_pieces_go_back_to_the_system_with_the_threshold_pinned() -> None:
    pinned, mib = _python(PIECES_LEFT, "pin")
    assert pinned == "True"
    assert float(mib) < 4
    # What the daemon would keep without it: the pieces stay in the heap.
    assert float(_python(PIECES_LEFT, "leave")[1]) > 20


def test_a_threshold_the_environment_sets_is_left_alone() -> None:
    assert _python(PIECES_LEFT, "pin", env={"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})[0] == "False"


def test_a_worker_thread_allocates_in_the_main_arena_with_the_arenas_capped() -> None:
    assert _arenas("cap") == ("True", 1)
    # What the daemon would do without it: the thread gets an arena of its own.
    assert _arenas("leave") == ("None", 2)


@pytest.mark.parametrize("env", [
    {"MALLOC_ARENA_MAX": "4"},
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},
    {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4"},
])
def test_an_arena_limit_the_environment_sets_is_left_alone(env: dict[str, str]) -> None:
    assert _arenas("cap", env=env) == ("False", 2)


@pytest.mark.parametrize(("env", "pinned", "capped"), [
    ({}, True, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_test=2"}, True, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, False, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, True, False),
    ({"MALLOC_ARENA_MAX": "2"}, True, False),
])
def test_the_daemon_tunes_the_allocator_at_start(tmp_path: Path, env: dict[str, str], pinned: bool, capped: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    config = '[defaults]\nwebsocket_monitor = false\n[[targets]]\nname = "t"\nurl = "http://127.0.0.1:9"\n'
    with comfywatch_run(tmp_path, config, "--log-format", "json", env=env) as daemon:
        pass
    events = [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]
    started = [event for event in events if event.get("event") == "started"]
    assert [(event["mmap_threshold_pinned"], event["arenas_capped"]) for event in started] == [(pinned, capped)]


def test_the_allocator_is_tuned_before_the_configuration_is_read(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned after a large block is freed (a fleet's configuration), glibc would keep its raised trim threshold;
    capped after a thread allocated, that thread would keep its arena."""
    calls: list[str] = []

    def pin() -> bool:
        calls.append("pin")
        return True

    def cap() -> bool:
        calls.append("cap")
        return True

    def load(daemon: Daemon) -> None:
        calls.append("load")
        raise ConfigError(["stop here"], "test")

    monkeypatch.setattr(malloc, "pin_mmap_threshold", pin)
    monkeypatch.setattr(malloc, "cap_arenas", cap)
    monkeypatch.setattr(Daemon, "load", load)
    assert main(["run", "--config", str(tmp_path / "comfywatch.toml")]) == 2
    assert calls == ["pin", "cap", "load"]
