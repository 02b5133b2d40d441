"""Run a real Prometheus and Alertmanager, and the small HTTP servers they talk to, for e2e tests.

Everything binds 127.0.0.1 on ephemeral ports and lives in a caller-supplied directory, so tests never
depend on :9090/:9093 being free. The pieces compose; a typical module fixture is::

    exporter = ExpositionServer()                     # or the real daemon's address
    webhook = WebhookReceiver()
    with exporter, webhook, run_alertmanager(tmp / "am", alertmanager_config(webhook.url)) as am:
        config = prometheus_config(
            [static_scrape_config("comfywatch", [exporter.address])],
            rule_files=[write_rules(tmp / "rules.yml", shorten_for(load_yaml(RULES)))],
            alertmanagers=[am.address],
        )
        with run_prometheus(tmp / "prom", config) as prom:
            prom.wait_for_targets(timeout=30)
            alert = prom.wait_for_alert("ComfyUIDown", labels={"target": "studio"})

Prometheus applies discovery updates on a 5 s tick, so the first scrape (and the first alert sent to
Alertmanager) comes about 5-6 s after start: start one instance per module or session, not per test.
All waiting is polling with a deadline (`wait_until`, `async_wait_until`). The HTTP servers run their
own event loop in a thread, so they keep answering while a synchronous test blocks on a poll.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

import httpx
import pytest
import yaml
from aiohttp import web

__all__ = [
    "ALERTMANAGER_BINARIES",
    "PROMETHEUS_BINARIES",
    "PROMTOOL_BINARIES",
    "AlertmanagerServer",
    "BackgroundServer",
    "ExpositionServer",
    "ManagedProcess",
    "PrometheusAPIError",
    "PrometheusServer",
    "WebhookReceiver",
    "alertmanager_config",
    "async_wait_until",
    "free_port",
    "labels_match",
    "load_yaml",
    "probe_scrape_config",
    "prometheus_config",
    "require_binary",
    "run_alertmanager",
    "run_prometheus",
    "shorten_for",
    "static_scrape_config",
    "wait_until",
    "write_rules",
    "write_yaml",
]

PROMETHEUS_BINARIES = ("prometheus",)
PROMTOOL_BINARIES = ("promtool",)
# Debian names the binary prometheus-alertmanager; upstream tarballs call it alertmanager.
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")

T = TypeVar("T")

_HTTP_TIMEOUT = 5.0


# --------------------------------------------------------------------------------------------------
# Binaries, ports, polling.


def require_binary(*names: str, env: Mapping[str, str] | None = None, path: str | None = None) -> str:
    """Return the path of the first of ``names`` found on PATH.

    When none is installed the calling test is skipped with a message saying what to install, unless
    the environment variable ``CI`` is set: then it fails, so CI can never pass by skipping.

    Args:
        names: executable names to try, in order.
        env: environment to read ``CI`` from (default ``os.environ``).
        path: search path (default ``$PATH``).
    """
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    env = os.environ if env is None else env
    message = (
        f"{' / '.join(names)} not found on PATH "
        "(apt-get install --no-install-recommends prometheus prometheus-alertmanager)"
    )
    if env.get("CI"):
        pytest.fail(f"{message}; CI is set, so this is an error, not a skip", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns a truthy value, and return that value.

    HTTP errors raised by the probe count as "not yet" (the server may still be starting).

    Raises:
        TimeoutError: the deadline passed; the message names ``what`` and the last error seen.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError, PrometheusAPIError) as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what} not reached within {timeout:g}s{detail}")
        time.sleep(interval)


@overload
async def async_wait_until(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, interval: float = ..., what: str = ...
) -> T: ...


@overload
async def async_wait_until(
    probe: Callable[[], T | None], *, timeout: float, interval: float = ..., what: str = ...
) -> T: ...


async def async_wait_until(
    probe: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    """Async `wait_until`: synchronous probes run in a thread so the event loop keeps serving."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            # Synchronous probes run in a thread: they may block on HTTP.
            outcome = probe() if inspect.iscoroutinefunction(probe) else await asyncio.to_thread(probe)
            result = await outcome if inspect.isawaitable(outcome) else outcome
        except (httpx.HTTPError, OSError, PrometheusAPIError) as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what} not reached within {timeout:g}s{detail}")
        await asyncio.sleep(interval)


def labels_match(labels: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    """True when every label in ``wanted`` has that value in ``labels``."""
    return all(labels.get(k) == v for k, v in (wanted or {}).items())


# --------------------------------------------------------------------------------------------------
# Configuration documents (pure).


def load_yaml(path: Path) -> Any:
    """Parse a YAML file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_yaml(path: Path, document: Any) -> Path:
    """Write ``document`` as YAML to ``path`` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def write_rules(path: Path, rules: Mapping[str, Any]) -> Path:
    """Write a rules document (``{"groups": [...]}``) to ``path``."""
    return write_yaml(path, dict(rules))


def shorten_for(rules: Mapping[str, Any], duration: str = "1s") -> dict[str, Any]:
    """A copy of a rules document with every alert's ``for:`` set to ``duration``.

    Live tests cannot wait 5-60 minutes; the real ``for:`` values are covered by promtool tests.
    Recording rules and the expressions themselves are left untouched.
    """
    shortened = copy.deepcopy(dict(rules))
    for group in shortened.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                rule["for"] = duration
    return shortened


def static_scrape_config(
    job_name: str,
    targets: Sequence[str],
    *,
    metrics_path: str = "/metrics",
    scrape_interval: str | None = None,
    labels: Mapping[str, str] | None = None,
    params: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """A scrape job for fixed ``host:port`` targets (comfywatch's own /metrics, or a fake exporter)."""
    static: dict[str, Any] = {"targets": list(targets)}
    if labels:
        static["labels"] = dict(labels)
    job: dict[str, Any] = {"job_name": job_name, "metrics_path": metrics_path, "static_configs": [static]}
    if scrape_interval:
        job["scrape_interval"] = scrape_interval
    if params:
        job["params"] = {k: list(v) for k, v in params.items()}
    return job


def probe_scrape_config(
    job_name: str,
    exporter: str,
    probe_targets: Sequence[str],
    *,
    module: str | None = None,
    scrape_interval: str | None = None,
) -> dict[str, Any]:
    """A blackbox-style job: scrape ``exporter``'s /probe once per entry of ``probe_targets``.

    Each probe target becomes ``?target=<entry>`` and the ``target`` label (which /probe output lacks
    and every comfywatch alert and dashboard needs); ``instance`` stays the exporter's address.
    """
    job: dict[str, Any] = {
        "job_name": job_name,
        "metrics_path": "/probe",
        "static_configs": [{"targets": list(probe_targets)}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "target"},
            {"target_label": "__address__", "replacement": exporter},
        ],
    }
    if module:
        job["params"] = {"module": [module]}
    if scrape_interval:
        job["scrape_interval"] = scrape_interval
    return job


def prometheus_config(
    scrape_configs: Sequence[Mapping[str, Any]],
    *,
    rule_files: Sequence[Path | str] = (),
    alertmanagers: Sequence[str] = (),
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> dict[str, Any]:
    """A complete prometheus.yml document; ``alertmanagers`` are ``host:port`` addresses."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "scrape_configs": [dict(job) for job in scrape_configs],
    }
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": list(alertmanagers)}]}]
        }
    return config


def alertmanager_config(
    webhook_url: str,
    *,
    group_by: Sequence[str] = ("alertname", "job", "target"),
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
) -> dict[str, Any]:
    """An alertmanager.yml routing every alert, firing and resolved, to one webhook."""
    return {
        "route": {
            "receiver": "webhook",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }


# --------------------------------------------------------------------------------------------------
# Child processes.


class ManagedProcess:
    """A child process in its own session whose output goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        """Start ``argv`` now."""
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def exited(self) -> bool:
        """True once the process has ended."""
        return self.process.poll() is not None

    def log_tail(self, limit: int = 4000) -> str:
        """The end of the process's combined output."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return text[-limit:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.exited():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def _start_with_port_retry(
    name: str,
    build_argv: Callable[[int], list[str]],
    workdir: Path,
    ready_path: str,
    ready_timeout: float,
) -> tuple[ManagedProcess, int]:
    """Start a server on a fresh port, retrying when the port was taken between probe and bind."""
    for attempt in range(3):
        port = free_port()
        proc = ManagedProcess(name, build_argv(port), workdir / f"{name}.log", workdir)
        url = f"http://127.0.0.1:{port}{ready_path}"

        def ready(client: httpx.Client, proc: ManagedProcess = proc, url: str = url) -> bool:
            if proc.exited():
                raise _EarlyExit
            return client.get(url).status_code == 200

        try:
            with httpx.Client(timeout=1.0) as client:
                wait_until(lambda: ready(client), timeout=ready_timeout, interval=0.1, what=f"{name} ready")
        except _EarlyExit:
            tail = proc.log_tail()
            if "address already in use" in tail and attempt < 2:
                continue
            raise RuntimeError(f"{name} exited during start-up:\n{tail}") from None
        except TimeoutError:
            proc.stop()
            raise RuntimeError(f"{name} not ready within {ready_timeout:g}s:\n{proc.log_tail()}") from None
        return proc, port
    raise RuntimeError(f"{name}: no free port after 3 attempts")  # pragma: no cover


class _EarlyExit(Exception):
    """The server process ended before it became ready."""


# --------------------------------------------------------------------------------------------------
# Prometheus.


class PrometheusAPIError(Exception):
    """The Prometheus HTTP API answered ``status: error``."""

    def __init__(self, error_type: str, error: str) -> None:
        """Keep Prometheus' ``errorType`` (``bad_data``, ``execution``...) and message."""
        super().__init__(f"{error_type}: {error}")
        self.error_type = error_type
        self.error = error


class PrometheusServer:
    """Client for one running Prometheus; every method is a single HTTP call or a deadline poll."""

    def __init__(self, process: ManagedProcess, port: int, workdir: Path, config_path: Path) -> None:
        """Wrap an already-ready Prometheus process listening on ``port``."""
        self.process = process
        self.port = port
        self.workdir = workdir
        self.config_path = config_path
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        # One pooled client: a fresh httpx client per call costs ~45 ms (it builds an SSL context).
        self.http = httpx.Client(base_url=self.url, timeout=_HTTP_TIMEOUT)

    def close(self) -> None:
        """Close the HTTP client (the process is stopped by `run_prometheus`)."""
        self.http.close()

    # One-shot API calls.

    def api_response(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The decoded JSON of ``GET /api/v1/<path>``, whatever its status (errors included)."""
        response = self.http.get(f"/api/v1/{path}", params=params)
        body: dict[str, Any] = response.json()
        return body

    def api(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """The ``data`` of ``GET /api/v1/<path>``.

        Raises:
            PrometheusAPIError: the API answered ``status: error``.
        """
        body = self.api_response(path, params)
        if body.get("status") != "success":
            raise PrometheusAPIError(str(body.get("errorType")), str(body.get("error")))
        return body["data"]

    def query_response(self, expr: str) -> dict[str, Any]:
        """The raw response to an instant query; ``errorType == "bad_data"`` means it did not parse."""
        return self.api_response("query", {"query": expr})

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", params)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing): ``[{"labels", "annotations", "state", ...}]``."""
        return list(self.api("alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """Loaded rule groups with each rule's ``health`` and ``lastError``."""
        return list(self.api("rules")["groups"])

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with ``health`` (up/down/unknown), ``lastError`` and ``labels``."""
        return list(self.api("targets", {"state": "active"})["activeTargets"])

    def label_values(self, label: str, match: Sequence[str] = ()) -> list[str]:
        """Values of ``label``, optionally only on series matching the selectors in ``match``."""
        params = {"match[]": list(match)} if match else None
        return list(self.api(f"label/{label}/values", params))

    def find_alert(
        self, alertname: str, *, state: str | None = "firing", labels: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The first active alert with that name, state (None = any) and labels, or None."""
        for alert in self.alerts():
            if alert["labels"].get("alertname") != alertname:
                continue
            if state is not None and alert["state"] != state:
                continue
            if labels_match(alert["labels"], labels):
                return alert
        return None

    def reload(self, config: Mapping[str, Any] | None = None) -> None:
        """Optionally rewrite the config file, then ``POST /-/reload`` (needs --web.enable-lifecycle)."""
        if config is not None:
            write_yaml(self.config_path, dict(config))
        response = self.http.post("/-/reload")
        response.raise_for_status()

    # Polls.

    def wait_for_alert(
        self,
        alertname: str,
        *,
        state: str = "firing",
        labels: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Poll until an alert with that name, state and labels is active; return it."""
        return wait_until(
            lambda: self.find_alert(alertname, state=state, labels=labels),
            timeout=timeout,
            what=f"{alertname}{dict(labels or {})} {state} in Prometheus",
        )

    def wait_for_alert_gone(
        self, alertname: str, *, labels: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> None:
        """Poll until no alert with that name and labels is active (pending or firing)."""
        wait_until(
            lambda: self.find_alert(alertname, state=None, labels=labels) is None,
            timeout=timeout,
            what=f"{alertname}{dict(labels or {})} resolved in Prometheus",
        )

    def wait_for_data(self, expr: str, *, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns at least one series; return the result."""
        return wait_until(lambda: self.query(expr), timeout=timeout, what=f"data for {expr}")

    def wait_for_targets(
        self, *, jobs: Sequence[str] | None = None, health: str = "up", timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Poll until every target of ``jobs`` (default: all jobs) has been scraped with ``health``."""

        def probe() -> list[dict[str, Any]]:
            chosen = [t for t in self.targets() if jobs is None or t["labels"].get("job") in jobs]
            return chosen if chosen and all(t["health"] == health for t in chosen) else []

        return wait_until(probe, timeout=timeout, what=f"targets {jobs or 'all'} {health}")


@contextmanager
def run_prometheus(
    workdir: Path,
    config: Mapping[str, Any],
    *,
    binary: str | None = None,
    ready_timeout: float = 30.0,
    resend_delay: str = "1s",
    extra_args: Sequence[str] = (),
) -> Iterator[PrometheusServer]:
    """Run Prometheus with ``config`` on an ephemeral loopback port until the block ends.

    Storage, config and log live in ``workdir``. ``--web.enable-lifecycle`` is on (see
    `PrometheusServer.reload`). ``resend_delay`` is how often firing alerts are re-sent to
    Alertmanager (upstream default 1m; short so tests see state changes quickly).
    Skips (or, with CI set, fails) the test when prometheus is not installed.
    """
    binary = binary or require_binary(*PROMETHEUS_BINARIES)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_yaml(workdir / "prometheus.yml", dict(config))

    def argv(port: int) -> list[str]:
        return [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            f"--rules.alert.resend-delay={resend_delay}",
            "--log.level=warn",
            *extra_args,
        ]

    proc, port = _start_with_port_retry("prometheus", argv, workdir, "/-/ready", ready_timeout)
    server = PrometheusServer(proc, port, workdir, config_path)
    try:
        yield server
    finally:
        server.close()
        proc.stop()


# --------------------------------------------------------------------------------------------------
# Alertmanager.


class AlertmanagerServer:
    """Client for one running Alertmanager (API v2)."""

    def __init__(self, process: ManagedProcess, port: int, workdir: Path) -> None:
        """Wrap an already-ready Alertmanager process listening on ``port``."""
        self.process = process
        self.port = port
        self.workdir = workdir
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        self.http = httpx.Client(base_url=self.url, timeout=_HTTP_TIMEOUT)

    def close(self) -> None:
        """Close the HTTP client (the process is stopped by `run_alertmanager`)."""
        self.http.close()

    def alerts(self, *, active: bool = True) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds: ``[{"labels", "annotations", "status": {"state"}, ...}]``."""
        params = {"active": "true", "silenced": "false", "inhibited": "false"} if active else None
        response = self.http.get("/api/v2/alerts", params=params)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def find_alert(self, alertname: str, labels: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """The first held alert with that name and labels, or None."""
        for alert in self.alerts():
            if alert["labels"].get("alertname") == alertname and labels_match(alert["labels"], labels):
                return alert
        return None

    def wait_for_alert(
        self, alertname: str, *, labels: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll until Alertmanager holds an alert with that name and labels; return it."""
        return wait_until(
            lambda: self.find_alert(alertname, labels),
            timeout=timeout,
            what=f"{alertname}{dict(labels or {})} in Alertmanager",
        )


@contextmanager
def run_alertmanager(
    workdir: Path,
    config: Mapping[str, Any],
    *,
    binary: str | None = None,
    ready_timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Iterator[AlertmanagerServer]:
    """Run Alertmanager with ``config`` on an ephemeral loopback port, clustering disabled.

    Skips (or, with CI set, fails) the test when alertmanager is not installed.
    """
    binary = binary or require_binary(*ALERTMANAGER_BINARIES)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_yaml(workdir / "alertmanager.yml", dict(config))

    def argv(port: int) -> list[str]:
        return [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Empty disables the gossip listener (default 0.0.0.0:9094, which could clash).
            "--cluster.listen-address=",
            "--log.level=warn",
            *extra_args,
        ]

    proc, port = _start_with_port_retry("alertmanager", argv, workdir, "/-/ready", ready_timeout)
    server = AlertmanagerServer(proc, port, workdir)
    try:
        yield server
    finally:
        server.close()
        proc.stop()


# --------------------------------------------------------------------------------------------------
# In-process HTTP servers on their own event loop thread.


class BackgroundServer:
    """An aiohttp application served on 127.0.0.1:<ephemeral> from a private event-loop thread.

    Use as a context manager. Because it has its own loop it answers Prometheus' scrapes and
    Alertmanager's webhooks even while the test thread blocks in `wait_until`.
    """

    def __init__(self, app: web.Application) -> None:
        """Prepare to serve ``app``; nothing listens until ``start()`` / ``__enter__``."""
        self.app = app
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as a Prometheus scrape target."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL without a trailing slash."""
        return f"http://{self.address}"

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; returns once the port is bound."""
        self._thread = threading.Thread(target=self._serve, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"{type(self).__name__} did not start within {timeout:g}s")
        if self._error is not None:
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and end the thread."""
        loop, runner = self._loop, self._runner
        if loop is None or self._thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> BackgroundServer:
        """Start and return self."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            runner = web.AppRunner(self.app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self._runner = runner
            self.port = runner.addresses[0][1]
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


ExpositionSource = Callable[[], str] | str

# Prometheus text exposition format 0.0.4.
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ExpositionServer(BackgroundServer):
    """Serves Prometheus text exposition the test controls, one document per path.

    ``server.set("/metrics", text_or_callable)``; a callable is called on every scrape (so counters
    can grow and timestamps stay current). Unknown paths answer 404. ``scrapes(path)`` counts hits.
    """

    def __init__(self, sources: Mapping[str, ExpositionSource] | None = None) -> None:
        """Serve ``sources`` (path -> text or callable); more can be added with `set` at any time."""
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        super().__init__(app)
        self._lock = threading.Lock()
        self._sources: dict[str, ExpositionSource] = dict(sources or {})
        self._scrapes: dict[str, int] = {}

    def set(self, path: str, source: ExpositionSource) -> None:
        """Serve ``source`` at ``path`` from the next scrape on."""
        with self._lock:
            self._sources[path] = source

    def scrapes(self, path: str) -> int:
        """How many times ``path`` has been fetched."""
        with self._lock:
            return self._scrapes.get(path, 0)

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        with self._lock:
            source = self._sources.get(path)
            if source is not None:
                self._scrapes[path] = self._scrapes.get(path, 0) + 1
        if source is None:
            return web.Response(status=404, text="not found\n")
        text = source() if callable(source) else source
        return web.Response(body=text.encode("utf-8"), headers={"Content-Type": EXPOSITION_CONTENT_TYPE})


class WebhookReceiver(BackgroundServer):
    """Collects Alertmanager webhook notifications posted to ``<url>/alerts``."""

    def __init__(self) -> None:
        """Prepare an empty receiver."""
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        super().__init__(app)
        self._lock = threading.Lock()
        self._notifications: list[dict[str, Any]] = []

    @property
    def hook_url(self) -> str:
        """The URL to put in an Alertmanager ``webhook_configs`` entry."""
        return f"{self.url}/alerts"

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification received so far (webhook payload version 4), oldest first."""
        with self._lock:
            return list(self._notifications)

    def find(
        self, alertname: str, *, status: str = "firing", labels: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The first alert in any notification with that name, status and labels, or None."""
        for note in self.notifications():
            for alert in note.get("alerts", []):
                if (
                    alert.get("status") == status
                    and alert.get("labels", {}).get("alertname") == alertname
                    and labels_match(alert.get("labels", {}), labels)
                ):
                    return dict(alert)
        return None

    def wait_for(
        self,
        alertname: str,
        *,
        status: str = "firing",
        labels: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Poll until a notification carries that alert with that status; return the alert."""
        return wait_until(
            lambda: self.find(alertname, status=status, labels=labels),
            timeout=timeout,
            what=f"webhook {status} notification for {alertname}{dict(labels or {})}",
        )

    async def _handle(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.text())
        with self._lock:
            self._notifications.append(payload)
        return web.Response(text="ok\n")
