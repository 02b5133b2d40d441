"""Start comfywatch as real processes (``simulate`` and ``run``) for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import TIMEOUT_FACTOR

__all__ = ["Proc", "comfywatch_run", "simulate"]


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    url: str
    admin_url: str | None
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-4000:]


def _wait_file(path: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            text = path.read_text(encoding="utf-8").strip()
            if text:
                return text
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}:\n{_tail(log)}")
        time.sleep(0.02)
    raise AssertionError(f"{path.name} not written within {timeout}s:\n{_tail(log)}")


def _stop(process: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout * TIMEOUT_FACTOR)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"process did not stop within {timeout}s of SIGTERM:\n{_tail(log)}") from None
    return process.returncode


@contextmanager
def simulate(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """``comfywatch simulate --port 0 ...`` as a subprocess; yields its URLs."""
    port_file = tmp / f"sim-{time.monotonic_ns()}.json"
    log = port_file.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfywatch", "simulate", "--port", "0", "--port-file", str(port_file), *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    try:
        info = json.loads(_wait_file(port_file, process, log))
        yield Proc(process, info["url"], info.get("admin_url"), log)
    finally:
        _stop(process, log)


@contextmanager
def comfywatch_run(tmp: Path, config: str, *extra: str, env: dict[str, str] | None = None,
                   args: Sequence[str] = ()) -> Iterator[Proc]:
    """``comfywatch run --config F --listen 127.0.0.1:0`` as a subprocess; yields its base URL."""
    config_path = tmp / f"comfywatch-{time.monotonic_ns()}.toml"
    config_path.write_text(config, encoding="utf-8")
    ready = config_path.with_suffix(".ready")
    log = config_path.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfywatch", "run", "--config", str(config_path), "--listen", "127.0.0.1:0",
             "--ready-file", str(ready), *args, *extra],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    try:
        address = _wait_file(ready, process, log)
        yield Proc(process, f"http://{address}", None, log)
    finally:
        code = _stop(process, log)
        assert code == 0, f"comfywatch run exited with {code}:\n{_tail(log)}"
