"""``/probe?target=URL&module=NAME``: blackbox_exporter-style probes through the real daemon's server.

Each probe builds a fresh client and state, answers 200 with ``comfyui_probe_success`` 0 or 1, has no
``target`` label, honours ``X-Prometheus-Scrape-Timeout-Seconds`` and never submits a canary.
"""

from __future__ import annotations

import io
import json
import secrets
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from comfywatch.basic_auth import basic_auth_header
from comfywatch.checks import system as system_check
from comfywatch.config import MAX_URL_CHARS, Config
from comfywatch.redact import SECRETS
from comfywatch.server.probe import WithoutJobsApi, make_probe_handler
from comfywatch.sim.admin import SimHandle, start_sim
from tests.fixtures import load_json
from tests.helpers import Clock, Metrics, RecordingServer, recording_server, running_daemon

TOKEN = "s3cret-probe-token"


def daemon_config(tmp_path: Path, watched: str) -> str:
    """The daemon watches one target on a long interval; probes are served beside it."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    return f"""
[defaults]
interval = "1h"
websocket_monitor = false

[[targets]]
name = "watched"
url = "{watched}"
  [targets.canary]
  enabled = false

[modules.local]

[modules.everything]
checks = ["system", "queue", "jobs"]

[modules.jobs-only]
checks = ["system", "jobs"]

[modules.quick]
timeout = "500ms"
checks = ["system"]

[modules.authed]
bearer_token_file = "{token_file}"
checks = ["system"]
allow = ["127.0.0.1"]

[modules.tokened]
bearer_token_file = "{token_file}"
checks = ["system"]

[modules.cloudy]
kind = "cloud"
"""


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    """A healthy simulated ComfyUI 0.3.64."""
    async with await start_sim() as handle:
        yield handle


@pytest.fixture
async def probe_base(sim: SimHandle, tmp_path: Path) -> AsyncIterator[str]:
    """Base URL of a running daemon whose /probe is under test."""
    async with running_daemon(daemon_config(tmp_path, sim.url), tmp_path) as (_daemon, base):
        yield base


async def probe(base: str, target: str, module: str | None = "local", *, headers: dict[str, str] | None = None
                ) -> tuple[int, str, float]:
    """(status, body, seconds) of one GET /probe."""
    params = {"target": target} | ({"module": module} if module else {})
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(
        f"{base}/probe", params=params, headers=headers or {}
    ) as response:
        return response.status, await response.text(), time.monotonic() - started


def assert_no_target_label(metrics: Metrics) -> None:
    labelled = [(name, labels) for name, labels, _ in metrics.samples if "target" in labels]
    assert labelled == []


async def test_probe_of_a_healthy_server(probe_base: str, sim: SimHandle) -> None:
    """A healthy simulator: probe_success 1, up 1, version info, queue gauges; no target label, no daemon series."""
    status, body, _ = await probe(probe_base, sim.url)
    assert status == 200
    metrics = Metrics(body)
    assert metrics.value("comfyui_probe_success") == 1.0
    assert metrics.value("comfyui_up") == 1.0
    assert metrics.value("comfyui_info", version="0.3.64") == 1.0
    assert metrics.value("comfyui_target_info", kind="local", url=sim.url) == 1.0
    assert metrics.value("comfyui_queue_running") == 0.0
    assert metrics.value("comfyui_queue_pending") == 0.0
    assert 0.0 < metrics.value("comfyui_probe_duration_seconds") < 5.0  # type: ignore[operator]
    assert_no_target_label(metrics)
    assert not any(name.startswith("comfywatch_") for name, _, _ in metrics.samples)


async def test_probe_openmetrics_output_parses(probe_base: str, sim: SimHandle) -> None:
    """With Prometheus' OpenMetrics Accept header the output is valid OpenMetrics with the probe families."""
    async with aiohttp.ClientSession() as session, session.get(
        f"{probe_base}/probe", params={"target": sim.url, "module": "local"},
        headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"},
    ) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        families = {f.name: f for f in parse_openmetrics(await response.text())}
    assert families["comfyui_probe_success"].samples[0].value == 1.0
    assert all("target" not in sample.labels for family in families.values() for sample in family.samples)


async def test_every_probe_starts_from_fresh_state_and_runs_no_canary(probe_base: str, sim: SimHandle) -> None:
    """Two probes each count exactly one /system_stats request; the server never sees a prompt."""
    for _ in range(2):
        status, body, _ = await probe(probe_base, sim.url, "everything")
        assert status == 200
        metrics = Metrics(body)
        assert metrics.value("comfyui_probe_success") == 1.0
        assert metrics.value("comfyui_requests_total", endpoint="system_stats", code="200") == 1.0
        assert metrics.value("comfyui_requests_total", endpoint="queue", code="200") == 1.0
        assert metrics.value("comfyui_jobs_total") == 0.0
    state = sim.state()
    assert state["number"] == 0
    assert state["jobs_submitted"] == 0
    assert state["history"] == []


async def jobs_requests(base: str, target: str, module: str = "everything") -> tuple[float | None, float | None]:
    """(``/api/jobs`` answered 404, ``/history`` answered 200) as counted by one successful probe."""
    status, body, _ = await probe(base, target, module)
    assert status == 200
    metrics = Metrics(body)
    assert metrics.value("comfyui_probe_success") == 1.0
    return (metrics.value("comfyui_requests_total", endpoint="jobs", code="404"),
            metrics.value("comfyui_requests_total", endpoint="history", code="200"))


async def test_a_server_without_the_jobs_api_is_asked_for_it_once(probe_base: str, sim: SimHandle) -> None:
    """ComfyUI 0.3.64 answers /api/jobs 404: the first probe learns it, the next ones read /history straight away,
    whatever password the caller's URL carries; another module, or a new server version, asks again."""
    host = sim.url.split("://", 1)[1]
    assert await jobs_requests(probe_base, f"http://probe:first-password@{host}") == (1.0, 1.0)
    for url in (sim.url, f"http://probe:another-password@{host}"):
        assert await jobs_requests(probe_base, url) == (None, 1.0)
    assert await jobs_requests(probe_base, sim.url, "jobs-only") == (1.0, 1.0)
    sim.cluster.system_stats["system"]["comfyui_version"] = "0.3.65"  # type: ignore[union-attr]
    assert await jobs_requests(probe_base, sim.url) == (1.0, 1.0)
    assert await jobs_requests(probe_base, sim.url) == (None, 1.0)


@pytest.fixture
async def probed_with_a_clock(sim: SimHandle) -> AsyncIterator[tuple[str, Clock]]:
    """A bare /probe app whose memo of servers without /api/jobs runs on a clock the test moves; yields (base
    URL, clock)."""
    clock = Clock()
    config = Config.model_validate({"modules": {"everything": {"checks": ["system", "queue", "jobs"]},
                                                "jobs-first": {"checks": ["jobs", "system"]}}})
    app = web.Application()
    app.router.add_get("/probe", make_probe_handler(lambda: config,
                                                    without_jobs_api=WithoutJobsApi(clock=clock)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", clock
    finally:
        await runner.cleanup()


async def test_probes_that_go_by_the_memo_do_not_renew_it(probed_with_a_clock: tuple[str, Clock],
                                                          sim: SimHandle) -> None:
    """A server probed more often than every two minutes is still asked again two minutes after its 404."""
    base, clock = probed_with_a_clock
    assert await jobs_requests(base, sim.url) == (1.0, 1.0)
    for later in (30.0, 60.0, 90.0):
        clock.now = 1000.0 + later
        assert await jobs_requests(base, sim.url) == (None, 1.0)
    clock.now = 1120.0
    assert await jobs_requests(base, sim.url) == (1.0, 1.0)


async def test_a_module_that_reads_jobs_before_system_asks_every_time(
        probed_with_a_clock: tuple[str, Clock], sim: SimHandle) -> None:
    """Its jobs check runs before a new version could show: it never goes by the memo."""
    base, _ = probed_with_a_clock
    for _ in range(2):
        assert await jobs_requests(base, sim.url, "jobs-first") == (1.0, 1.0)


async def test_a_newer_server_has_its_jobs_api_read_at_every_probe(probe_base: str) -> None:
    async with await start_sim(jobs_api=True) as newer:
        for _ in range(2):
            metrics = Metrics((await probe(probe_base, newer.url, "everything"))[1])
            assert metrics.value("comfyui_requests_total", endpoint="jobs", code="200") == 1.0
            assert metrics.value("comfyui_requests_total", endpoint="history", code="200") is None


@pytest.mark.parametrize(("fault", "reason"), [("down", "connect"), ("http_401", "auth"), ("http_500", "server_error")])
async def test_probe_of_a_failing_server_reports_failure(probe_base: str, fault: str, reason: str) -> None:
    """Down, 401 and 500 servers: HTTP 200 with probe_success 0, up 0 and the failure's reason counted."""
    async with await start_sim(faults=[fault]) as broken:
        status, body, _ = await probe(probe_base, broken.url)
    assert status == 200
    metrics = Metrics(body)
    assert metrics.value("comfyui_probe_success") == 0.0
    assert metrics.value("comfyui_up") == 0.0
    assert metrics.value("comfyui_request_failures_total", endpoint="system_stats", reason=reason) == 1.0
    assert metrics.value("comfyui_info", version="0.3.64") is None
    assert_no_target_label(metrics)


async def test_probe_honours_the_scrape_timeout_header(probe_base: str) -> None:
    """A 1.5 s slow server with a 1.2 s scrape timeout: the probe gives up after ~0.7 s and reports failure."""
    async with await start_sim(faults=["slow"], slow_ms=1500) as slow:
        status, body, seconds = await probe(probe_base, slow.url,
                                            headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.2"})
    assert status == 200
    assert seconds < 1.2, seconds
    metrics = Metrics(body)
    assert metrics.value("comfyui_probe_success") == 0.0
    assert metrics.value("comfyui_up") == 0.0
    assert metrics.value("comfyui_request_failures_total", endpoint="system_stats", reason="timeout") == 1.0
    assert 0.5 < metrics.value("comfyui_probe_duration_seconds") < 1.2  # type: ignore[operator]


async def test_module_timeout_caps_a_longer_scrape_timeout(probe_base: str) -> None:
    """The module's 500 ms timeout wins over a 30 s scrape timeout."""
    async with await start_sim(faults=["slow"], slow_ms=1500) as slow:
        status, body, seconds = await probe(probe_base, slow.url, "quick",
                                            headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"})
    assert status == 200
    assert seconds < 1.5, seconds
    assert Metrics(body).value("comfyui_probe_success") == 0.0


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingServer]:
    """A stand-in ComfyUI behind an authenticating proxy: answers /api/system_stats, records each request."""
    async with recording_server("/api/system_stats", load_json("system_stats.json")) as server:
        yield server


async def test_module_bearer_token_is_sent_and_never_shown(
    probe_base: str, recorder: RecordingServer
) -> None:
    """``bearer_token_file`` of the module becomes the Authorization header; the token is not in the output."""
    address, seen = recorder.address, recorder.requests
    status, body, _ = await probe(probe_base, f"http://{address}", "authed")
    assert status == 200
    assert Metrics(body).value("comfyui_probe_success") == 1.0
    assert [request.authorization for request in seen] == [f"Bearer {TOKEN}"]
    assert TOKEN not in body


async def test_userinfo_in_the_target_becomes_basic_auth(
    probe_base: str, recorder: RecordingServer
) -> None:
    """``http://user:pass@host`` probes with basic auth, like a configured target; the password is not shown."""
    address, seen = recorder.address, recorder.requests
    status, body, _ = await probe(probe_base, f"http://alice:pa55word@{address}", "quick")
    assert status == 200
    metrics = Metrics(body)
    assert metrics.value("comfyui_probe_success") == 1.0
    assert metrics.value("comfyui_target_info", kind="local", url=f"http://{address}") == 1.0
    assert [request.authorization for request in seen] == ["Basic YWxpY2U6cGE1NXdvcmQ="]
    assert "pa55word" not in body


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"module": "local"}, "target must be an http(s) URL"),
        ({"target": "ftp://127.0.0.1/x", "module": "local"}, "target must be an http(s) URL"),
        ({"target": "http://user:hunter2@127.0.0.1:99999", "module": "local"}, "target has an invalid port"),
        # Hosts the HTTP client cannot use: a zero-width space, fullwidth dots, an empty IDNA label.
        ({"target": "http://user:hunter2@a\u200bb:1/", "module": "local"}, "target is not a usable URL"),
        ({"target": "http://user:hunter2@\uff0e\uff0e/", "module": "local"}, "target is not a usable URL"),
        ({"target": "http://user:hunter2@xn--:1/", "module": "local"}, "target is not a usable URL"),
        ({"target": "http://127.0.0.1:1", "module": "nope"}, "unknown module 'nope'"),
        ({"target": "http://127.0.0.1:1", "module": "cloudy"}, "only local modules can be probed"),
    ],
)
async def test_bad_probe_requests_are_400_without_echoing_the_target(
    probe_base: str, params: dict[str, str], message: str
) -> None:
    """Missing/invalid targets and unknown or cloud modules answer 400 with a reason, never the URL."""
    async with aiohttp.ClientSession() as session, session.get(f"{probe_base}/probe", params=params) as response:
        text = await response.text()
    assert response.status == 400
    assert text.strip() == message
    assert "hunter2" not in text


# Secrets of a probe live and die with the request.


async def test_probes_with_fresh_passwords_leave_the_redactor_unchanged(
    probe_base: str, recorder: RecordingServer
) -> None:
    """Each probe authenticates with its own password; none of them is added to the process-wide redactor,
    whose pattern (scrubbed on every log line) keeps the same number of secrets however many probes ran."""
    address, seen = recorder.address, recorder.requests
    before = len(SECRETS)
    passwords = [f"fresh-{number}-{secrets.token_hex(6)}" for number in range(40)]
    for password in passwords:
        status, body, _ = await probe(probe_base, f"http://alice:{password}@{address}", "quick")
        assert status == 200
        assert Metrics(body).value("comfyui_probe_success") == 1.0
        assert password not in body
    assert [request.authorization for request in seen] == [basic_auth_header("alice", p) for p in passwords]
    assert len(SECRETS) == before
    assert not any(password in SECRETS for password in passwords)


def forms_of(user: str, password: str) -> list[str]:
    """The password as a probe's output could carry it: plain, percent-encoded, inside HTTP Basic."""
    token = basic_auth_header(user, password).removeprefix("Basic ")
    return [password, quote(password, safe=""), quote_plus(password), token, quote(token, safe="")]


async def test_a_failing_probe_masks_its_own_password_in_log_and_answer(
    probe_base: str, sim: SimHandle, log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error quoting the probe's credentials (password, percent-encoded, Basic base64) is logged
    as probe_failed with all of them masked, and answered with a fixed 500."""
    password = f"unexpected-{secrets.token_hex(6)} /+"

    async def broken_check(*_args: object) -> None:
        raise RuntimeError(f"server echoed {' '.join(forms_of('alice', password))}")

    monkeypatch.setattr(system_check, "run", broken_check)
    target = sim.url.replace("http://", f"http://alice:{quote(password, safe='')}@")
    status, body, _ = await probe(probe_base, target, "quick")
    assert (status, body) == (500, "probe failed\n")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [line["event"] for line in lines if line["level"] == "error"] == ["probe_failed"]
    assert "server echoed ***" in json.dumps(lines)
    for form in forms_of("alice", password):
        assert form not in log_stream.getvalue()


async def test_an_oversized_target_is_refused_and_logged_without_its_password(
    probe_base: str, log_stream: io.StringIO
) -> None:
    """A target over aiohttp's 8190-byte request line, percent-encoded as Prometheus sends it: 400, and the
    log line of the refusal masks the (never registered) password in every form."""
    password = f"oversized-{secrets.token_hex(6)}"
    target = f"http://alice:{password}@127.0.0.1:9/{'a' * 9000}"
    status, _, _ = await probe(probe_base, quote(target, safe=""), None)
    assert status == 400
    assert "127.0.0.1" in log_stream.getvalue()  # the refusal was logged
    for form in forms_of("alice", password):
        assert form not in log_stream.getvalue()


async def test_an_oversized_target_is_answered_without_echo(probe_base: str) -> None:
    """The daemon's server answers a request line over 8190 bytes with its status alone, not aiohttp's quote of
    the line (which holds the target's password)."""
    target = quote(f"http://alice:never-echoed-pw@127.0.0.1:9/{'a' * 9000}", safe="")
    assert (await probe(probe_base, target, None))[:2] == (400, "400 Bad Request: malformed request\n")


async def test_a_target_over_the_length_bound_is_refused(probe_base: str) -> None:
    """A target longer than MAX_URL_CHARS (yet under the request line limit) gets a 400 naming the bound."""
    status, body, _ = await probe(probe_base, f"http://alice:pw-{'x' * MAX_URL_CHARS}@127.0.0.1:9/")
    assert (status, body) == (400, f"target longer than {MAX_URL_CHARS} characters\n")


async def test_error_answers_are_scrubbed(probe_base: str) -> None:
    """What a 400 quotes from the request (the module name) is scrubbed like a log line."""
    status, body, _ = await probe(probe_base, "http://127.0.0.1:9", "http://alice:hunter2@127.0.0.1:9")
    assert (status, body) == (400, "unknown module 'http://***@127.0.0.1:9'\n")


# Where /probe may connect: a module's credentials go only where it is allowed to send them.

#: A loopback address outside every allow list of these daemons.
UNLISTED_HOST = "127.0.0.2"
#: Long enough to connect on loopback, short enough that a probe which did connect ends quickly.
SHORT_SCRAPE = {"X-Prometheus-Scrape-Timeout-Seconds": "1"}


@pytest.fixture
def unlisted_listener() -> Iterator[tuple[str, socket.socket]]:
    """``host:port`` of a listening socket on UNLISTED_HOST that nobody accepts on: a connection made to it
    stays in its accept queue."""
    with socket.create_server((UNLISTED_HOST, 0)) as server:
        yield f"{UNLISTED_HOST}:{server.getsockname()[1]}", server


def connected_to(server: socket.socket) -> bool:
    return bool(select.select([server], [], [], 0)[0])


async def test_a_credentialed_module_refuses_a_host_outside_its_allow_list(
    probe_base: str, unlisted_listener: tuple[str, socket.socket]
) -> None:
    """``authed`` sends a bearer token and allows 127.0.0.1 only: a probe of another host is a 403 with the
    reason, and no connection reaches that host. The same host probed by an uncredentialed module without an
    allow list is connected to (the listener does see connections)."""
    address, server = unlisted_listener
    status, body, _ = await probe(probe_base, f"http://{address}", "authed", headers=SHORT_SCRAPE)
    assert (status, body) == (403, "target not in modules.authed.allow\n")
    assert not connected_to(server)
    status, body, _ = await probe(probe_base, f"http://{address}", "local", headers=SHORT_SCRAPE)
    assert status == 200
    assert Metrics(body).value("comfyui_probe_success") == 0.0
    assert connected_to(server)


async def test_a_credentialed_module_without_allow_reaches_only_its_targets(
    probe_base: str, recorder: RecordingServer
) -> None:
    """``tokened`` sends the token and has no allow list: no target of the config uses its token file, so a
    probe anywhere is a 403 naming the fix, and the server never sees the token."""
    address, seen = recorder.address, recorder.requests
    status, body, _ = await probe(probe_base, f"http://{address}", "tokened")
    assert status == 403
    assert body == ("module 'tokened' sends credentials, and only to the targets that use the same files; "
                    "list other hosts in modules.tokened.allow\n")
    assert seen == []


async def test_module_secret_files_are_read_bounded_at_each_probe(
    probe_base: str, recorder: RecordingServer, tmp_path: Path
) -> None:
    """A token file grown past the secret-file bound after start is refused (500, nothing sent), not read whole
    into a header."""
    address, seen = recorder.address, recorder.requests
    (tmp_path / "token").write_text("x" * (64 * 2**10 + 1), encoding="utf-8")
    status, body, _ = await probe(probe_base, f"http://{address}", "authed")
    assert (status, body) == (500, "module credentials unreadable\n")
    assert seen == []


@pytest.fixture
async def restricted_base(sim: SimHandle, tmp_path: Path) -> AsyncIterator[str]:
    """A daemon whose ``[probe] allow`` lists 127.0.0.1 only; its ``local`` module has no credentials."""
    config = f"""
[defaults]
interval = "1h"
websocket_monitor = false

[[targets]]
name = "watched"
url = "{sim.url}"
  [targets.canary]
  enabled = false

[probe]
allow = ["127.0.0.1"]
"""
    async with running_daemon(config, tmp_path) as (_daemon, base):
        yield base


async def test_probe_allow_restricts_a_module_without_credentials(
    restricted_base: str, unlisted_listener: tuple[str, socket.socket]
) -> None:
    """``[probe] allow`` limits every module, the uncredentialed ``local`` too: 403, no connection made."""
    address, server = unlisted_listener
    status, body, _ = await probe(restricted_base, f"http://{address}", "local", headers=SHORT_SCRAPE)
    assert (status, body) == (403, "target not in [probe] allow\n")
    assert not connected_to(server)


async def test_an_allowed_host_is_probed(restricted_base: str, sim: SimHandle) -> None:
    """A host in ``[probe] allow`` is probed as usual."""
    status, body, _ = await probe(restricted_base, sim.url, "local")
    assert status == 200
    assert Metrics(body).value("comfyui_probe_success") == 1.0
