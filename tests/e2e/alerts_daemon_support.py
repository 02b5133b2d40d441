"""Building blocks of tests/e2e/test_alerts_daemon.py: simulators, a TLS "GPU" proxy, the live rule copy,
the daemon configuration and a scenario runner that drives many faults through Prometheus at once.

The scenario runner is the reason this module exists: every fault needs tens of seconds between being
switched on and its alert resolving again, so faults run in parallel on separate targets. One loop polls
Prometheus' ``/api/v1/alerts`` and the webhook receiver and moves each scenario through its phases
(switched on -> alert firing in Prometheus -> firing notification at the webhook -> switched off -> alert
gone from Prometheus -> resolved notification at the webhook), recording when each step happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.doctor_setups import ProxyOptions, proxy_app
from tests.e2e.procs import Proc
from tests.e2e.promstack import (
    AlertmanagerServer,
    PrometheusAPIError,
    PrometheusServer,
    WebhookReceiver,
    labels_match,
    shorten_for,
)

__all__ = [
    "CLOUD_API_KEY",
    "SHORTENED_WINDOWS",
    "SHORT_WINDOW",
    "CloudTarget",
    "Expect",
    "GpuSwitch",
    "LocalTarget",
    "Outcome",
    "Rig",
    "Scenario",
    "TlsProxy",
    "admin_post",
    "daemon_config",
    "gpu_stats_editor",
    "live_rules",
    "run_scenarios",
    "start_simulators",
    "switch_on",
]

CLOUD_API_KEY = "cw-live-alerts-0123456789"

# Range windows cut for the live copy of the rules, and what they become (see the test module docstring).
SHORTENED_WINDOWS = ("5m", "10m", "30m", "1h")
SHORT_WINDOW = "20s"


# --------------------------------------------------------------------------------------------------
# The live rule copy (pure).


def live_rules(rules: Mapping[str, Any], *, for_: str = "1s", leave_out: Collection[str] = ()) -> dict[str, Any]:
    """A copy of the rules with every ``for:`` set to ``for_``, the long range windows shortened and the
    alerting rules named in ``leave_out`` removed.

    Thresholds, label matchers and every other part of the expressions stay as they are; only the
    ``[5m]``, ``[10m]``, ``[30m]`` and ``[1h]`` windows become ``[20s]`` (``[2h]`` and ``[6h]`` stay).
    """
    shortened = shorten_for(rules, for_)
    pattern = re.compile(r"\[(" + "|".join(re.escape(w) for w in SHORTENED_WINDOWS) + r")\]")
    for group in shortened.get("groups", []):
        group["rules"] = [rule for rule in group.get("rules", []) if rule.get("alert") not in leave_out]
        for rule in group["rules"]:
            rule["expr"] = pattern.sub(f"[{SHORT_WINDOW}]", rule["expr"])
            if rule.get("alert") == "ComfywatchAbsent":
                # absent(up) holds until Prometheus's first scrape of the job, which a busy machine can start
                # later than a 1 s `for` allows: the rig checks that it stays quiet while the job is scraped.
                rule["for"] = "30s"
    return shortened


# --------------------------------------------------------------------------------------------------
# Simulator processes and their admin API.


def admin_post(admin_url: str, path: str, body: Mapping[str, Any]) -> Any:
    """POST JSON to a simulator's admin API (``/_sim/...``) and return the decoded answer."""
    response = httpx.post(f"{admin_url}{path}", json=dict(body), timeout=5.0)
    response.raise_for_status()
    return response.json()


@contextmanager
def start_simulators(tmp: Path, argvs: Mapping[str, Sequence[str]], timeout: float = 30.0) -> Iterator[dict[str, Proc]]:
    """Start one ``comfywatch simulate --port 0`` process per entry, all at once; yield them by name.

    Starting them in parallel saves about a second per process (the import time) over one by one.
    """
    started: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    try:
        for name, args in argvs.items():
            port_file = tmp / f"sim-{name}.json"
            log = tmp / f"sim-{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "comfywatch", "simulate", "--port", "0", "--port-file", str(port_file),
                     *args],
                    stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
                )
            started[name] = (process, port_file, log)
        deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
        procs: dict[str, Proc] = {}
        while len(procs) < len(started):
            for name, (process, port_file, log) in started.items():
                if name in procs:
                    continue
                if port_file.exists() and port_file.stat().st_size > 0:
                    info = json.loads(port_file.read_text(encoding="utf-8"))
                    procs[name] = Proc(process, info["url"], info.get("admin_url"), log)
                elif process.poll() is not None:
                    raise AssertionError(f"simulator {name} exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"simulators not ready within {timeout}s: {sorted(set(started) - set(procs))}")
            time.sleep(0.05)
        yield procs
    finally:
        for process, _, _ in started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _, _ in started.values():
            try:
                process.wait(10 * TIMEOUT_FACTOR)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --------------------------------------------------------------------------------------------------
# A TLS reverse proxy that makes a simulated (CPU-only) ComfyUI look like a GPU box.


@dataclass
class GpuSwitch:
    """The free shares of VRAM and RAM the proxied server reports; a test lowers them to cause ComfyUIVRAMLow
    and ComfyUIRAMLow."""

    free_ratio: float = 0.5
    ram_free_ratio: float = 0.5


GPU_NAME = "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync"
GPU_VRAM = 25_757_220_864


def gpu_stats_editor(switch: GpuSwitch) -> Callable[[dict[str, Any]], None]:
    """Rewrite a ``/system_stats`` body in place to report one CUDA device (the simulator has no GPU mode) and
    the free RAM ``switch`` asks for."""

    def edit(stats: dict[str, Any]) -> None:
        stats["system"]["ram_free"] = int(stats["system"]["ram_total"] * switch.ram_free_ratio)
        free = int(GPU_VRAM * switch.free_ratio)
        stats["devices"] = [
            {
                "name": GPU_NAME,
                "type": "cuda",
                "index": 0,
                "vram_total": GPU_VRAM,
                "vram_free": free,
                "torch_vram_total": 4_000_000_000,
                "torch_vram_free": 1_000_000_000,
            }
        ]

    return edit


class TlsProxy:
    """``proxy_app`` (tests/e2e/doctor_setups.py) served over HTTPS from a private event-loop thread.

    A thread of its own, because the tests block in polls while the daemon keeps talking to it.
    """

    def __init__(self, upstream: str, ssl_context: ssl.SSLContext, options: ProxyOptions) -> None:
        """Prepare a proxy to ``upstream`` presenting the certificate in ``ssl_context``."""
        self.upstream = upstream
        self.options = options
        self._ssl = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TlsProxy:
        """Start listening; returns once the port is bound."""
        self._thread = threading.Thread(target=self._serve, name="TlsProxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10 * TIMEOUT_FACTOR):
            raise TimeoutError("TLS proxy did not start")
        if self._error is not None:
            raise RuntimeError("TLS proxy failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop listening and end the thread."""
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10 * TIMEOUT_FACTOR)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10 * TIMEOUT_FACTOR)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            # A short shutdown: a WebSocket the proxy still pipes must not hold teardown for a minute.
            runner = web.AppRunner(proxy_app(self.upstream, self.options), access_log=None, shutdown_timeout=1.0)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl)
            loop.run_until_complete(site.start())
            self._runner = runner
            self.port = runner.addresses[0][1]
        except BaseException as exc:  # reported to __enter__
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


# --------------------------------------------------------------------------------------------------
# The daemon configuration.


@dataclass(frozen=True)
class LocalTarget:
    """A daemon target on the multi-target local simulator (``/t/<index>``)."""

    name: str
    index: int
    canary: bool = False
    #: The ``pool`` label: servers meant to be identical.
    pool: str | None = None


@dataclass(frozen=True)
class CloudTarget:
    """A daemon target on its own Cloud simulator process."""

    name: str
    canary_timeout: str = "5s"


def daemon_config(
    *,
    state_dir: Path,
    local_url: str,
    local_targets: Sequence[LocalTarget],
    cloud_urls: Mapping[str, str],
    cloud_targets: Sequence[CloudTarget],
    api_key_file: Path,
    tls_url: str,
    tls_ca_file: Path,
    tls_target: str,
    watched_workflows: Path,
) -> str:
    """The TOML of the daemon under test: 1 s polls, 2 s stall_after, fast canaries, one TLS target, the
    workflows of *watched_workflows* watched on every pool."""
    lines = [
        f'state_dir = "{state_dir}"',
        "[defaults]",
        'interval = "1s"',
        'timeout = "900ms"',
        'stall_after = "2s"',
    ]
    for target in local_targets:
        lines += ["[[targets]]", f'name = "{target.name}"', f'url = "{local_url}/t/{target.index}"']
        if target.pool is not None:
            lines += [f'labels = {{ pool = "{target.pool}" }}']
        lines += ["  [targets.canary]"]
        lines += ['  interval = "1s"', '  timeout = "3s"'] if target.canary else ["  enabled = false"]
    lines += [
        "[[targets]]", f'name = "{tls_target}"', f'url = "{tls_url}"', f'tls_ca_file = "{tls_ca_file}"',
        "  [targets.canary]", "  enabled = false",
    ]
    for cloud in cloud_targets:
        lines += [
            "[[targets]]", f'name = "{cloud.name}"', 'kind = "cloud"', f'url = "{cloud_urls[cloud.name]}"',
            f'api_key_file = "{api_key_file}"',
            # The default (60 a minute) is for a real account; 1 s polls plus a canary a second need more.
            "max_requests_per_minute = 6000",
            "  [targets.canary]", "  enabled = true", '  interval = "1s"', f'  timeout = "{cloud.canary_timeout}"',
            "  max_runs_per_day = 100000",
        ]
    for pool in sorted({t.pool for t in local_targets if t.pool is not None}):
        lines += ["[[workflows]]", f'path = "{watched_workflows}"', f'pool = "{pool}"']
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Scenarios.


@dataclass
class Rig:
    """Everything a scenario may switch: simulators, the GPU proxy, the daemon and its config file."""

    local: Proc
    clouds: dict[str, Proc]
    local_index: dict[str, int]
    gpu: GpuSwitch
    config_path: Path
    config_text: str
    prometheus: PrometheusServer | None = None
    alertmanager: AlertmanagerServer | None = None
    webhook: WebhookReceiver | None = None
    daemon: Proc | None = None
    #: Filled by the test module: each scenario's progress, alerts seen on the faultless targets, and the
    #: names of alerts without a target label (fleet, daemon) seen meanwhile.
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    noise: dict[str, set[str]] = field(default_factory=dict)
    untargeted: set[str] = field(default_factory=set)

    def local_faults(self, target: str, faults: Sequence[str], slow_ms: int | None = None) -> None:
        """Replace the faults of one local target (admin API ``POST /_sim/faults``)."""
        body: dict[str, Any] = {"target": self.local_index[target], "faults": list(faults)}
        if slow_ms is not None:
            body["slow_ms"] = slow_ms
        assert self.local.admin_url is not None
        admin_post(self.local.admin_url, "/_sim/faults", body)

    def local_deploy(self, target: str, **change: Any) -> None:
        """Change what one local target offers and restart it, as a deploy does (``POST /_sim/deploy``)."""
        assert self.local.admin_url is not None
        admin_post(self.local.admin_url, "/_sim/deploy", {"target": self.local_index[target], **change})
        admin_post(self.local.admin_url, "/_sim/restart", {"target": self.local_index[target]})

    def cloud_faults(self, target: str, faults: Sequence[str]) -> None:
        """Replace the faults of one Cloud simulator."""
        admin_url = self.clouds[target].admin_url
        assert admin_url is not None
        admin_post(admin_url, "/_sim/faults", {"faults": list(faults)})

    def reload_with(self, text: str) -> None:
        """Rewrite the daemon's config file and send it SIGHUP."""
        assert self.daemon is not None
        self.config_path.write_text(text, encoding="utf-8")
        self.daemon.process.send_signal(signal.SIGHUP)


@dataclass(frozen=True)
class Expect:
    """An alert a scenario must fire: its name and the labels that identify it."""

    alert: str
    labels: Mapping[str, str]

    @property
    def key(self) -> str:
        """``Name{a=b,...}``, for messages and as a dictionary key."""
        return self.alert + "{" + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())) + "}"

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True for an alert with this name and these labels."""
        return labels.get("alertname") == self.alert and labels_match(labels, self.labels)


@dataclass(frozen=True)
class Scenario:
    """A fault, how to switch it on and off, and the alerts it must fire (then resolve)."""

    name: str
    expects: tuple[Expect, ...]
    on: Callable[[Rig], None]
    off: Callable[[Rig], None]
    #: Switched on before the daemon starts: its signal is polled only once a minute (Cloud billing).
    before_daemon: bool = False

    @property
    def targets(self) -> set[str]:
        """The ``target`` labels this scenario's alerts carry."""
        return {e.labels["target"] for e in self.expects if "target" in e.labels}


@dataclass
class Outcome:
    """What happened to one scenario, with monotonic timestamps."""

    scenario: Scenario
    phase: str = "idle"
    on_at: float = 0.0
    off_at: float | None = None
    baseline: list[str] = field(default_factory=list)
    fired: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    delivered: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    resolved: dict[str, float] = field(default_factory=dict)
    delivered_resolved: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    also_firing: set[str] = field(default_factory=set)
    error: str | None = None
    _hook_mark: int = 0

    @property
    def done(self) -> bool:
        """True once resolved everywhere, or given up."""
        return self.phase in {"done", "failed"}

    def fire_seconds(self, expect: Expect) -> float:
        """Seconds from switching the fault on to the alert firing in Prometheus."""
        return self.fired[expect.key][0] - self.on_at

    def resolve_seconds(self, expect: Expect) -> float:
        """Seconds from switching the fault off to the alert leaving Prometheus."""
        assert self.off_at is not None
        return self.resolved[expect.key] - self.off_at

    def summary(self) -> str:
        """One line per expected alert with its timings, for logs and failure messages."""
        parts = []
        for e in self.scenario.expects:
            fired = f"fired {self.fire_seconds(e):5.1f}s" if e.key in self.fired else "not fired"
            gone = e.key in self.resolved and self.off_at is not None
            resolved = f"resolved {self.resolve_seconds(e):5.1f}s" if gone else "not resolved"
            hooks = f"webhook firing={e.key in self.delivered} resolved={e.key in self.delivered_resolved}"
            parts.append(f"{self.scenario.name:32} {e.key:70} {fired}  {resolved}  {hooks}")
        if self.also_firing:
            parts.append(f"{'':32} also firing on its target(s): {', '.join(sorted(self.also_firing))}")
        if self.error:
            parts.append(f"{'':32} ERROR: {self.error}")
        return "\n".join(parts)


def _webhook_alerts(notes: Sequence[Mapping[str, Any]], status: str) -> list[dict[str, Any]]:
    return [dict(a) for note in notes for a in note.get("alerts", []) if a.get("status") == status]


def _switch(outcome: Outcome, action: Callable[[Rig], None], rig: Rig) -> bool:
    try:
        action(rig)
    except (httpx.HTTPError, OSError) as exc:
        outcome.phase, outcome.error = "failed", f"could not switch the fault: {exc!r}"
        return False
    return True


def switch_on(outcome: Outcome, rig: Rig, alerts: Sequence[Mapping[str, Any]], hook_mark: int) -> None:
    """Switch a scenario's fault on, remembering which of its alerts were already active (should be none)."""
    outcome.baseline = [
        e.key for e in outcome.scenario.expects for a in alerts if e.matches(a["labels"])
    ]
    outcome._hook_mark = hook_mark
    outcome.on_at = time.monotonic()
    if _switch(outcome, outcome.scenario.on, rig):
        outcome.phase = "firing"


def _step(outcome: Outcome, rig: Rig, now: float, alerts: Sequence[Mapping[str, Any]],
          notes: Sequence[Mapping[str, Any]], timeout: float) -> None:
    expects = outcome.scenario.expects
    if outcome.phase == "firing":
        for e in expects:
            if e.key not in outcome.fired:
                hit = next((a for a in alerts if a["state"] == "firing" and e.matches(a["labels"])), None)
                if hit is not None:
                    outcome.fired[e.key] = (now, dict(hit))
            if e.key in outcome.fired and e.key not in outcome.delivered:
                sent = [a for a in _webhook_alerts(notes[outcome._hook_mark:], "firing") if e.matches(a["labels"])]
                if sent:
                    outcome.delivered[e.key] = (now, sent[0])
        if all(e.key in outcome.delivered for e in expects):
            outcome._hook_mark = len(notes)
            outcome.off_at = time.monotonic()
            if _switch(outcome, outcome.scenario.off, rig):
                outcome.phase = "resolving"
            return
    elif outcome.phase == "resolving":
        for e in expects:
            if e.key not in outcome.resolved and not any(e.matches(a["labels"]) for a in alerts):
                outcome.resolved[e.key] = now
            if e.key in outcome.resolved and e.key not in outcome.delivered_resolved:
                sent = [a for a in _webhook_alerts(notes[outcome._hook_mark:], "resolved") if e.matches(a["labels"])]
                if sent:
                    outcome.delivered_resolved[e.key] = (now, sent[0])
        if all(e.key in outcome.delivered_resolved for e in expects):
            outcome.phase = "done"
            return
    if outcome.phase in {"firing", "resolving"} and now - outcome.on_at > timeout:
        if outcome.phase == "firing":
            missing = [e.key for e in expects if e.key not in outcome.fired]
            undelivered = [k for k in outcome.fired if k not in outcome.delivered]
            outcome.error = f"within {timeout:g}s: never fired {missing}; fired but not delivered {undelivered}"
            _switch(outcome, outcome.scenario.off, rig)
        else:
            missing = [e.key for e in expects if e.key not in outcome.resolved]
            undelivered = [k for k in outcome.resolved if k not in outcome.delivered_resolved]
            outcome.error = f"within {timeout:g}s: still active {missing}; resolved but no webhook {undelivered}"
        outcome.phase = "failed"


def run_scenarios(
    rig: Rig,
    outcomes: Mapping[str, Outcome],
    *,
    timeout: float,
    watch: Sequence[str] = (),
    interval: float = 0.25,
) -> dict[str, set[str]]:
    """Drive every outcome (already switched on, or switched on here) until done or ``timeout`` after it began.

    Returns, for each target in ``watch``, the alerts seen active (pending or firing) for it meanwhile; adds
    the names of firing alerts without a target label to ``rig.untargeted``.
    """
    assert rig.prometheus is not None and rig.webhook is not None
    prom, webhook = rig.prometheus, rig.webhook
    alerts = prom.alerts()
    mark = len(webhook.notifications())
    for outcome in outcomes.values():
        if outcome.phase == "idle":
            switch_on(outcome, rig, alerts, mark)
    noise: dict[str, set[str]] = {t: set() for t in watch}
    while not all(o.done for o in outcomes.values()):
        try:
            alerts = prom.alerts()
        except (httpx.HTTPError, PrometheusAPIError):
            time.sleep(interval)
            continue
        notes = webhook.notifications()
        now = time.monotonic()
        for alert in alerts:
            target = alert["labels"].get("target")
            if target is None:
                # Firing only: one scrape of /metrics slower than its 1 s timeout on a busy CI box makes the
                # live ComfywatchDown (for: 1s) pending without comfywatch being down.
                if alert.get("state") == "firing":
                    rig.untargeted.add(alert["labels"]["alertname"])
            elif target in noise:
                check = alert["labels"].get("check")
                noise[target].add(alert["labels"]["alertname"] + (f"[{check}]" if check else ""))
        for outcome in outcomes.values():
            if outcome.done:
                continue
            targets = outcome.scenario.targets
            expected = {e.alert for e in outcome.scenario.expects}
            outcome.also_firing |= {
                a["labels"]["alertname"] for a in alerts
                if a["state"] == "firing" and a["labels"].get("target") in targets
                and a["labels"]["alertname"] not in expected
            }
            _step(outcome, rig, now, alerts, notes, timeout)
        time.sleep(interval)
    return noise
