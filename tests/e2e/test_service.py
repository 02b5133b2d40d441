"""The daemon as a system service: sd_notify sequence, SIGHUP reload, protected /metrics."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest

from tests.certs import make_certs
from tests.e2e.procs import comfywatch_run, simulate
from tests.helpers import Metrics

pytestmark = pytest.mark.e2e


@contextmanager
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock
    finally:
        sock.close()


def _messages_until(sock: socket.socket, wanted: str, timeout: float = 20.0) -> list[str]:
    """Receive datagrams until one contains the line *wanted*; returns every message seen."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536).decode()
        except TimeoutError:
            break
        seen.append(data)
        if wanted in data.splitlines():
            return seen
    raise AssertionError(f"{wanted!r} never arrived; got {seen}")


def _scrape(url: str, **kwargs: object) -> Metrics:
    with urllib.request.urlopen(url, timeout=5, **kwargs) as response:  # type: ignore[arg-type]
        return Metrics(response.read().decode())


def _config(url: str) -> str:
    return f'[defaults]\ninterval = "1s"\ntimeout = "500ms"\n[[targets]]\nname = "sim"\nurl = "{url}"\n' \
           '  [targets.canary]\n  enabled = false\n'


def test_notify_sequence_ready_watchdog_reload_stopping(tmp_path: Path) -> None:
    """READY=1 comes with a STATUS line, WATCHDOG=1 pings follow, SIGHUP gives RELOADING=1 then READY=1,
    and SIGTERM sends STOPPING=1."""
    with notify_socket(tmp_path) as sock, simulate(tmp_path) as sim:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
        with comfywatch_run(tmp_path, _config(sim.url), env=env) as daemon:
            first = _messages_until(sock, "READY=1")
            ready = next(m for m in first if "READY=1" in m.splitlines())
            assert any(line.startswith("STATUS=1 targets:") for line in ready.splitlines())
            assert not any("WATCHDOG=1" in m for m in first[: first.index(ready)]), "pinged before READY"
            _messages_until(sock, "WATCHDOG=1", timeout=5)
            daemon.process.send_signal(signal.SIGHUP)
            after_hup = _messages_until(sock, "RELOADING=1", timeout=10)
            assert after_hup
            _messages_until(sock, "READY=1", timeout=10)
            daemon.process.send_signal(signal.SIGTERM)
            _messages_until(sock, "STOPPING=1", timeout=10)


def test_sighup_reload_good_and_bad_config(tmp_path: Path) -> None:
    """A bad config on SIGHUP keeps the old one and sets reload_success 0; a fixed config sets it back to 1."""
    with simulate(tmp_path) as sim, comfywatch_run(tmp_path, _config(sim.url)) as daemon:
        config_path = next(tmp_path.glob("comfywatch-*.toml"))
        metrics_url = f"{daemon.url}/metrics"
        deadline = time.monotonic() + 15
        while _scrape(metrics_url).value("comfyui_up", target="sim") != 1.0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        config_path.write_text(_config(sim.url) + 'intervall = "5s"\n', encoding="utf-8")
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while (m := _scrape(metrics_url)).value("comfywatch_config_last_reload_success") != 0.0:
            assert time.monotonic() < deadline, m.text[-2000:]
            time.sleep(0.1)
        assert m.value("comfyui_up", target="sim") == 1.0, "old configuration must keep running"
        config_path.write_text(_config(sim.url).replace('"sim"', '"renamed"'), encoding="utf-8")
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while (m := _scrape(metrics_url)).value("comfyui_up", target="renamed") != 1.0:
            assert time.monotonic() < deadline, m.text[-2000:]
            time.sleep(0.1)
        assert m.value("comfywatch_config_last_reload_success") == 1.0
        assert m.find("comfyui_up", target="sim") == []
        assert "reload_failed" in daemon.output()


def test_metrics_behind_tls_and_basic_auth(tmp_path: Path) -> None:
    """With a web-config.yml, /metrics needs TLS from the configured certificate and bcrypt basic auth."""
    certs = make_certs(tmp_path / "certs")
    password = "correct horse battery staple"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web-config.yml"
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {certs.valid.cert}\n  key_file: {certs.valid.key}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n", encoding="utf-8")
    with simulate(tmp_path) as sim:
        config = f'[server]\nweb_config_file = "{web_config}"\n' + _config(sim.url)
        with comfywatch_run(tmp_path, config) as daemon:
            https = daemon.url.replace("http://", "https://")
            context = certs.client_context()
            good = urllib.request.Request(f"{https}/metrics", headers={
                "Authorization": "Basic " + b64encode(f"prometheus:{password}".encode()).decode()})
            with urllib.request.urlopen(good, timeout=10, context=context) as response:
                assert response.status == 200
                assert b"comfywatch_build_info" in response.read()
            wrong = urllib.request.Request(f"{https}/metrics", headers={
                "Authorization": "Basic " + b64encode(b"prometheus:nope").decode()})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(wrong, timeout=10, context=context)
            assert refused.value.code == 401
            refused.value.close()
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(f"{https}/metrics", timeout=10, context=context)
            assert missing.value.code == 401
            missing.value.close()
            with pytest.raises(urllib.error.URLError) as untrusted:
                urllib.request.urlopen(good, timeout=10, context=ssl.create_default_context())
            assert isinstance(untrusted.value.reason, ssl.SSLError)
            with urllib.request.urlopen(f"{https}/healthz", timeout=10, context=context) as health:
                assert health.status == 200
            assert password not in daemon.output()
            assert hashed not in daemon.output()


def test_bad_web_config_fails_start_with_a_clear_message(tmp_path: Path) -> None:
    """An invalid web-config.yml stops the start with exit 2 and names the file and the problem."""
    web_config = tmp_path / "web-config.yml"
    web_config.write_text("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n",
                          encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text(f'[server]\nweb_config_file = "{web_config}"\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
    result = subprocess.run([os.sys.executable, "-m", "comfywatch", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"{web_config}: tls_server_config.cert_file/key_file: file not found: /nonexistent.pem"
                             " and /nonexistent.key\n")
