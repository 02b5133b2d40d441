"""``comfywatch doctor --json`` against the simulator in each of its fault modes, both as real processes.

Each case starts ``comfywatch simulate --fault F`` (local ComfyUI or ``--cloud``), prepares what the fault needs
to show (a background job that fails, jobs left pending) through the admin API or the Cloud API, and runs
``python -m comfywatch doctor --json``. Nothing here imports comfywatch: the same file drives the code of any
tree it is run in (the working directory's ``comfywatch`` is the one ``python -m`` finds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.procs import Proc, simulate

__all__ = ["CASES", "DoctorCase", "DoctorRun", "run_case"]

CLOUD_KEY = "ck-golden-doctor-0123456789"
#: Doctor's per-step timeout (``--timeout``): ample on a loaded machine, so only the faults meant to show as
#: timeouts do.
DOCTOR_TIMEOUT = "5"
#: The timeout of the cases that are about waiting (slow answers, a silent WebSocket): short, to keep them quick.
SHORT_TIMEOUT = "1"
#: Slower than the short timeout: the ``slow`` faults show as timeouts, not as slow answers.
SLOW_MS = 2500
#: A Cloud job of the simulator: an empty image previewed (what the Cloud canary submits).
CLOUD_PROMPT: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


@dataclass(frozen=True)
class DoctorRun:
    """What one doctor process answered (exit code, JSON report), and the simulator's port it was given."""

    code: int
    report: dict[str, Any]
    ports: tuple[int, ...]


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _state(sim: Proc) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim.admin_url}/_sim/state", timeout=10) as response:
        state: dict[str, Any] = json.loads(response.read())
    return state


def _until(sim: Proc, done: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while not done(state := _state(sim)):
        if time.monotonic() > deadline:
            raise AssertionError(f"simulator never reached: {what}; last state {state}")
        time.sleep(0.02)


def one_failed_job(sim: Proc) -> None:
    """A background job that the fault makes fail, finished."""
    _post(f"{sim.admin_url}/_sim/submit", {"job_ms": 5})
    _until(sim, lambda s: s["jobs_failed"] >= 1, "a failed background job")


def two_pending(sim: Proc) -> None:
    """Two background jobs the dead worker never takes."""
    for _ in range(2):
        _post(f"{sim.admin_url}/_sim/submit", {"job_ms": 5})
    _until(sim, lambda s: len(s["queue_pending"]) == 2, "two pending jobs")


#: Cloud job states that end a job (the simulator's raw states).
CLOUD_TERMINAL = frozenset({"success", "error", "non_retryable_error", "lost", "cancelled"})


def _submit_cloud_job(sim: Proc) -> None:
    """One job that another client of the account submits."""
    _post(f"{sim.url}/api/prompt", {"prompt": CLOUD_PROMPT}, {"X-API-Key": CLOUD_KEY})


def one_finished_cloud_job(sim: Proc) -> None:
    """One job of another client, past the simulated dispatch and run time."""
    _submit_cloud_job(sim)
    _until(sim, lambda s: sum(s["jobs"].values()) == 1 and set(s["jobs"]) <= CLOUD_TERMINAL, "a finished Cloud job")


def one_waiting_cloud_job(sim: Proc) -> None:
    """One job of another client, waiting for a concurrency slot it never gets."""
    _submit_cloud_job(sim)
    _until(sim, lambda s: s["jobs_submitted"] == 1, "a submitted Cloud job")


@dataclass(frozen=True)
class DoctorCase:
    """One fault mode and how doctor is pointed at it."""

    fault: str
    cloud: bool = False
    #: Run the canary (off: ``--no-canary``).
    canary: bool = False
    #: Run the canary from a config with this ``[targets.canary] timeout`` (a stuck job fails it in time).
    canary_timeout: str | None = None
    #: doctor's ``--timeout``.
    timeout: str = DOCTOR_TIMEOUT
    prepare: Callable[[Proc], None] | None = None

    @property
    def name(self) -> str:
        """The golden file's stem."""
        return f"{'cloud' if self.cloud else 'local'}-{self.fault}"


CASES: tuple[DoctorCase, ...] = (
    DoctorCase("none", canary=True),
    DoctorCase("down"),
    DoctorCase("slow", timeout=SHORT_TIMEOUT),
    DoctorCase("stall", canary=True, canary_timeout="1s"),
    DoctorCase("worker_dead", prepare=two_pending),
    DoctorCase("execution_error", canary=True, prepare=one_failed_job),
    DoctorCase("oom", canary=True, prepare=one_failed_job),
    DoctorCase("http_401"),
    DoctorCase("http_403"),
    DoctorCase("http_429"),
    DoctorCase("http_500"),
    DoctorCase("http_502_html"),
    DoctorCase("garbage_json"),
    DoctorCase("huge_body"),
    DoctorCase("restart"),
    DoctorCase("ws_no_upgrade"),
    DoctorCase("ws_silent", timeout=SHORT_TIMEOUT),
    DoctorCase("none", cloud=True),
    DoctorCase("down", cloud=True),
    DoctorCase("http_401", cloud=True),
    DoctorCase("http_402", cloud=True),
    DoctorCase("http_429_rate", cloud=True),
    DoctorCase("http_429_queue_limit", cloud=True),
    DoctorCase("http_429_payment", cloud=True),
    DoctorCase("http_5xx", cloud=True),
    DoctorCase("slow", cloud=True, timeout=SHORT_TIMEOUT),
    DoctorCase("stuck_jobs", cloud=True, prepare=one_waiting_cloud_job),
    DoctorCase("balance_error", cloud=True),
    DoctorCase("insufficient_funds_runtime", cloud=True, prepare=one_finished_cloud_job),
    DoctorCase("oom", cloud=True, prepare=one_finished_cloud_job),
    DoctorCase("lost", cloud=True, prepare=one_finished_cloud_job),
    DoctorCase("inactive_subscription", cloud=True),
)


def _environment() -> dict[str, str]:
    # The developer's own COMFYWATCH_* settings must not reach the processes under test.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMFYWATCH_")}
    return {**env, "NO_COLOR": "1", "COMFYWATCH_CLOUD_API_KEY": CLOUD_KEY}


def _simulator_args(case: DoctorCase) -> list[str]:
    args = ["--slow-ms", str(SLOW_MS)]
    if case.fault != "none":
        args += ["--fault", case.fault]
    if case.cloud:
        args += ["--cloud", "--cloud-api-key", CLOUD_KEY]
    return args


def _doctor_args(case: DoctorCase, sim: Proc, workdir: Path) -> list[str]:
    if case.canary_timeout is not None:
        config = workdir / f"{case.name}.toml"
        config.write_text(
            f'[[targets]]\nname = "sim"\nurl = "{sim.url}"\n  [targets.canary]\n  timeout = "{case.canary_timeout}"\n',
            encoding="utf-8",
        )
        source = ["--config", str(config)]
    else:
        source = ["--cloud", "--url", sim.url] if case.cloud else ["--url", sim.url]
    return [*source, "--json", "--timeout", case.timeout, *([] if case.canary else ["--no-canary"])]


def run_case(case: DoctorCase, workdir: Path) -> DoctorRun:
    """Simulator up in the fault mode, prepared, one doctor run against it."""
    env = _environment()
    with simulate(workdir, *_simulator_args(case), env=env) as sim:
        port = urllib.parse.urlsplit(sim.url).port
        if case.prepare is not None:
            case.prepare(sim)
        done = subprocess.run(
            [sys.executable, "-m", "comfywatch", "doctor", *_doctor_args(case, sim, workdir)],
            capture_output=True, env=env, timeout=120 * TIMEOUT_FACTOR, check=False,
        )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"doctor ({case.name}) printed no JSON, exit {done.returncode}:\n{done.stdout!r}\n{done.stderr!r}"
        ) from None
    return DoctorRun(done.returncode, report, (port,) if port else ())
