"""The open-files limit of ``comfywatch run``: the soft limit is raised to the hard one at start, and a fleet
that needs more descriptors than the hard limit allows is said at once in the log."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from comfywatch.daemon.fdlimit import SPARE_DESCRIPTORS, descriptors_needed
from tests.conftest import TIMEOUT_FACTOR

PROBE = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"


def _limited(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return apply


def _config(targets: int) -> str:
    lines = ['[defaults]\nwebsocket_monitor = true\ninterval = "60s"\n']
    # Nothing listens on port 9 of loopback: each poll is refused at once.
    lines += [f'[[targets]]\nname = "gpu-{n}"\nurl = "http://127.0.0.1:9"\ncanary = {{enabled = false}}\n'
              for n in range(targets)]
    return "\n".join(lines)


def _run_until_ready(tmp_path: Path, targets: int, soft: int, hard: int) -> list[dict[str, object]]:
    config = tmp_path / "comfywatch.toml"
    config.write_text(_config(targets), encoding="utf-8")
    ready, log = tmp_path / "ready", tmp_path / "comfywatch.log"
    # The log goes to a file: a pipe nobody reads while the daemon starts would fill and block its event loop.
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfywatch", "run", "--config", str(config), "--listen", "127.0.0.1:0",
             "--ready-file", str(ready), "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_limited(soft, hard))
    try:
        deadline = time.monotonic() + 20 * TIMEOUT_FACTOR
        while not (ready.exists() and ready.stat().st_size):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "comfywatch run did not get ready"
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=20 * TIMEOUT_FACTOR)
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    """A child given soft 64 of hard 1024 runs with 1024 after raise_soft_limit (the daemon's first step)."""
    code = ("from comfywatch.daemon.fdlimit import raise_soft_limit; import resource; "
            "print(raise_soft_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          preexec_fn=_limited(64, 1024), timeout=60 * TIMEOUT_FACTOR)
    assert done.stdout.split() == ["1024", "1024"]


def test_a_fleet_over_the_hard_limit_is_warned_about(tmp_path: Path) -> None:
    """20 monitored local targets need 2 × 20 + spare descriptors: under a hard limit of 200 the daemon still
    starts (soft raised from 128 to 200) and logs open_files_limit_low with both numbers and the way out."""
    needed = descriptors_needed(20, monitored=True)
    assert needed == 40 + SPARE_DESCRIPTORS
    events = _run_until_ready(tmp_path, 20, soft=128, hard=200)
    low = [e for e in events if e.get("event") == "open_files_limit_low"]
    assert len(low) == 1, events[:5]
    assert low[0]["limit"] == 200 and low[0]["needed"] == needed
    assert "LimitNOFILE" in str(low[0]["advice"])


def test_a_fleet_within_the_limit_is_not_warned_about(tmp_path: Path) -> None:
    events = _run_until_ready(tmp_path, 10, soft=128, hard=1024)
    assert not [e for e in events if e.get("event") == "open_files_limit_low"]
    assert any(e.get("event") == "started" for e in events), events[:5]
