"""``comfywatch doctor`` as a real process against the simulator's faults and deliberately broken set-ups.

Every test runs ``python -m comfywatch doctor ...`` as a subprocess while the servers it examines (the
simulator, reverse proxies, TLS fronts, impostor services) run in the test's event loop on loopback, and
asserts the failing check's id, its hint and the exit code.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from comfywatch.errors import DIAGNOSIS_HINTS, Diagnosis
from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.sim.faults import Fault
from tests.certs import CertBundle, make_certs
from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.doctor_setups import ProxyOptions, expiring_certs, not_comfyui_app, proxy_app, serve
from tests.fixtures import FIXTURES
from tests.helpers import eventually
from tests.ports import closed_port

pytestmark = pytest.mark.e2e

CLOUD_KEY = "ck-doctor-test-9f8e7d6c5b4a"
PASSWORD = "S3cret-Pa55word-xyz"
NGINX_UPGRADE_LINES = ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                       'proxy_set_header Connection "upgrade";')
WORKFLOWS = FIXTURES / "workflows"


@dataclass
class Run:
    """One finished doctor process."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def report(self) -> dict[str, Any]:
        try:
            body: dict[str, Any] = json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"not JSON:\n{self}") from None
        return body

    def checks(self, target: int = 0) -> dict[str, dict[str, Any]]:
        """Check id -> check of one target (ids are unique per target except server.device and workflow.lint)."""
        return {c["id"]: c for c in self.report()["targets"][target]["checks"]}

    def check(self, check_id: str, target: int = 0) -> dict[str, Any]:
        checks = self.checks(target)
        assert check_id in checks, f"no {check_id} in:\n{self}"
        return checks[check_id]

    def __str__(self) -> str:
        return f"doctor {' '.join(self.args)} -> {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The developer's own COMFYWATCH_* settings must not leak into what the tests examine.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYWATCH_")}
    return {**env, "NO_COLOR": "1", **(extra or {})}


async def doctor(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> Run:
    """Run ``python -m comfywatch doctor ARGS`` without blocking the loop that serves the set-up."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfywatch", "doctor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(env),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout * TIMEOUT_FACTOR)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"doctor {' '.join(args)} did not finish within {timeout} s") from None
    assert process.returncode is not None
    return Run(args, process.returncode, out.decode(), err.decode())


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    async with await start_sim() as handle:
        yield handle


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _config(tmp_path: Path, body: str, stem: str = "doctor") -> str:
    path = tmp_path / f"{stem}.toml"
    assert not path.exists(), f"{path} written twice"
    path.write_text(body, encoding="utf-8")
    return str(path)


def _target_toml(name: str, url: str, extra: str = "") -> str:
    return f'[[targets]]\nname = "{name}"\nurl = "{url}"\n{extra}\n'


def _skipped(run: Run) -> dict[str, str]:
    return {c["id"]: c["summary"] for c in run.report()["targets"][0]["checks"] if c["status"] == "skipped"}


T = TypeVar("T")


async def each_case(cases: Sequence[T], label: Callable[[T], str], check: Callable[[T], Awaitable[None]],
                    limit: int = 4) -> None:
    """Run ``check(case)`` for every case concurrently (at most *limit* at once) and fail naming every case
    that failed. Each case starts its own servers and a doctor process; running them side by side keeps
    the module's runtime in budget on 2 cores, where most of a doctor run is the interpreter starting."""
    gate = asyncio.Semaphore(limit)

    async def one(case: T) -> str | None:
        async with gate:
            try:
                await check(case)
            except AssertionError as exc:
                return f"[{label(case)}] {exc}"
            return None

    problems = [p for p in await asyncio.gather(*(one(case) for case in cases)) if p is not None]
    assert not problems, f"{len(problems)} of {len(cases)} cases failed:\n\n" + "\n\n".join(problems)


# ---------------------------------------------------------------------------------------------------------
# The simulator in each fault mode.


async def _failing_jobs(handle: SimHandle) -> None:
    """One finished failed job in the history (the fault makes every job fail at run time)."""
    await handle.submit(job_ms=5)
    await eventually(lambda: asyncio.sleep(0, handle.state()), lambda s: s["jobs_failed"] >= 1,
                     timeout=10, what="a failed background job")


async def _two_pending(handle: SimHandle) -> None:
    await handle.submit(job_ms=5)
    await handle.submit(job_ms=5)
    assert len(handle.state()["queue_pending"]) == 2


@dataclass(frozen=True)
class FaultCase:
    fault: str
    check: str
    status: str
    summary: str  # a fragment of the check's summary
    hint: str  # a fragment of its hint
    code: int
    args: tuple[str, ...] = ("--no-canary",)
    prepare: Callable[[SimHandle], Awaitable[None]] | None = None
    reason: str | None = None
    canary_timeout: str | None = None  # run the canary from a config with this [targets.canary] timeout
    also: tuple[str, str, str] | None = None  # another check that must end so: (id, status, details.reason)


FAULT_CASES = [
    FaultCase("down", "network.tcp", "fail", "nothing listens on 127.0.0.1", "Is ComfyUI running, and on port", 1,
              reason="connect"),
    FaultCase("slow", "http.api", "fail", "did not answer within 0.5 s", "did not answer in time", 1,
              args=("--no-canary", "--timeout", "0.5"), reason="timeout"),
    FaultCase("stall", "canary.run", "fail", "canary failed: timeout", "did not answer in time", 1, args=(),
              canary_timeout="1s", reason="timeout"),
    FaultCase("worker_dead", "server.queue", "warn", "2 pending and nothing running", "worker thread", 0,
              prepare=_two_pending),
    FaultCase("execution_error", "server.failures", "warn", "1 of the last 1 jobs failed (RuntimeError)",
              "traceback", 1, args=(), prepare=_failing_jobs, also=("canary.run", "fail", "execution_error")),
    FaultCase("oom", "server.failures", "warn", "1 out-of-memory failures", "--lowvram", 1, args=(),
              prepare=_failing_jobs, also=("canary.run", "fail", "oom")),
    FaultCase("http_401", "http.api", "fail", "401 from an authenticating proxy", "proxy's credentials", 1,
              reason="auth"),
    FaultCase("http_403", "http.api", "fail", "403 Forbidden", "Origin header", 1, reason="forbidden"),
    FaultCase("http_429", "http.api", "fail", "rate_limited: HTTP 429", "Retry-After", 1, reason="rate_limited"),
    FaultCase("http_500", "http.api", "fail", "server_error: HTTP 500", "ComfyUI log", 1, reason="server_error"),
    FaultCase("http_502_html", "http.api", "fail", "a proxy answers HTTP 502", "cannot reach ComfyUI", 1,
              reason="server_error"),
    FaultCase("garbage_json", "http.api", "fail", "body is not valid JSON", "Check the port", 1,
              reason="invalid_response"),
    FaultCase("huge_body", "http.api", "fail", "response body larger than", "Check the port", 1,
              reason="invalid_response"),
    FaultCase("restart", "server.failures", "ok", "no finished jobs in history yet", "", 0),
    FaultCase("ws_no_upgrade", "websocket.upgrade", "fail", "answered with HTTP 400 instead of 101",
              NGINX_UPGRADE_LINES[1], 1),
    FaultCase("ws_silent", "websocket.upgrade", "fail", "no status frame arrived within 1 s", "proxy_buffering off",
              1, reason="timeout"),
]


async def test_every_simulator_fault_is_diagnosed(tmp_path: Path) -> None:
    """Each simulator fault makes doctor report the right check, status, reason and hint, and exit 0 or 1."""

    async def check(case: FaultCase) -> None:
        async with await start_sim(faults=[case.fault], slow_ms=2500) as handle:
            if case.prepare is not None:
                await case.prepare(handle)
            if case.canary_timeout:
                canary = f'  [targets.canary]\n  timeout = "{case.canary_timeout}"\n'
                source = ("--config", _config(tmp_path, _target_toml("sim", handle.url, canary), case.fault))
            else:
                source = ("--url", handle.url)
            run = await doctor(*source, "--json", "--timeout", "1", *case.args)
            if case.fault == "stall":
                # The canary gave up on its stuck job and interrupted it: nothing of doctor's is left running.
                state = handle.state()
                assert state["jobs_submitted"] == 1 and state["queue_running"] == [], state
        found = run.check(case.check)
        assert found["status"] == case.status, run
        assert case.summary in found["summary"], run
        if case.hint:
            assert found["hint"] is not None and case.hint in found["hint"], run
        if case.reason is not None:
            assert found["details"]["reason"] == case.reason, run
        if case.also is not None:
            other = run.check(case.also[0])
            assert (other["status"], other["details"]["reason"]) == case.also[1:], run
        assert run.code == case.code, run
        assert run.report()["ok"] is (case.code == 0)
        if case.check == "http.api" and case.status == "fail":
            # the run stops at the failed request, and says so
            assert _skipped(run) == {"websocket.upgrade": "skipped: http.api failed",
                                     "server": "skipped: http.api failed",
                                     "canary.run": "skipped: http.api failed"}, run

    assert {c.fault for c in FAULT_CASES} == {f.value for f in Fault}  # every fault the simulator has
    await each_case(FAULT_CASES, lambda c: c.fault, check)


async def test_a_stuck_queue_is_the_canary_s_diagnosis_not_a_timeout() -> None:
    """server.queue found pending jobs and nothing running, and a second look finds them still waiting: the
    canary is not submitted to wait out its 30 s behind them, and canary.run names the stuck worker (with
    server.queue's fix) instead of blaming a slow server or proxy."""
    async with await start_sim(faults=["worker_dead"]) as handle:
        await _two_pending(handle)
        run = await doctor("--url", handle.url, "--json", "--timeout", "1")
        assert handle.state()["jobs_submitted"] == 2, run  # the two above: doctor queued no canary
    queue, canary = run.check("server.queue"), run.check("canary.run")
    assert queue["status"] == "warn" and queue["summary"] == "2 pending and nothing running", run
    assert canary["status"] == "fail", run
    assert re.fullmatch(r"not run: the worker is not consuming the queue \(2 jobs still pending after [\d.]+ s "
                        r"with nothing running\): a canary would wait behind them", canary["summary"]), run
    assert canary["hint"] == queue["hint"], run
    assert canary["details"]["pending"] == 2 and canary["details"]["running"] == 0, run
    assert "did not answer in time" not in run.stdout, run
    assert run.code == 1, run


async def test_fault_before_http_skips_the_later_checks_and_says_why() -> None:
    """With nothing listening, the checks after TCP are listed as skipped, naming the check that failed."""
    async with await start_sim(faults=["down"]) as handle:
        run = await doctor("--url", handle.url, "--json", "--timeout", "1",
                           "--workflow", str(WORKFLOWS / "canary_preview_image.json"))
    assert _skipped(run) == {
        "http.api": "skipped: network.tcp failed",
        "websocket.upgrade": "skipped: network failed",
        "server": "skipped: network failed",
        "workflow.lint": "skipped: network failed",
        "canary.run": "skipped: network failed",
    }, run
    assert "network.tls" not in run.checks()  # plain http: there is no TLS step to skip


# ---------------------------------------------------------------------------------------------------------
# Healthy set-ups, text output, JSON schema, exit codes.

CHECK_LINE = re.compile(r"^  ([✓!✗-]) (\S+)\s+(.*)$")


async def test_healthy_simulator_text_report_with_canary_table(sim: SimHandle) -> None:
    """A healthy server: ✓ lines, the canary's phase table, warnings with a fix, a summary line, exit 0."""
    run = await doctor("--url", sim.url, "--timeout", "5")
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    assert lines[0] == f"127.0.0.1 (local, {sim.url})"
    marks = {m[2]: m[1] for line in lines if (m := CHECK_LINE.match(line))}
    assert marks == {
        "network.dns": "✓", "network.tcp": "✓", "http.api": "✓", "websocket.upgrade": "✓", "server.version": "✓",
        "server.device": "!", "server.memory": "✓", "server.exposure": "✓", "server.clock": "✓",
        "server.custom_nodes": "!", "server.queue": "✓", "server.jobs_api": "!", "server.failures": "✓",
        "canary.run": "✓",
    }, run
    assert re.search(r"✓ http\.api\s+/system_stats answered in [\d.]+ ms \(connect [\d.]+ ms, server", run.stdout)
    assert "ComfyUI 0.3.64" in run.stdout
    table = lines[lines.index(next(x for x in lines if "canary.run" in x)) + 1:]
    assert [x.split()[0] for x in table[:5]] == ["submit", "queue", "execute", "fetch", "total"], run
    # the CPU device warning carries its fix on the next line
    device = next(i for i, x in enumerate(lines) if "server.device" in x)
    assert lines[device + 1].strip().startswith("fix: The torch device is cpu"), run
    assert lines[-1] == "healthy: 11 ok, 3 warnings, 0 failed, 0 skipped", run
    assert "\x1b[" not in run.stdout  # not a TTY: no colours
    assert sim.state()["jobs_succeeded"] == 1  # the canary really ran


async def test_http_phases_in_the_summary_are_those_in_the_details(sim: SimHandle) -> None:
    """http.api's line (the text output) shows exactly details.phases (the JSON): connect is the fresh
    connection network.tcp timed, in both, never a number the JSON leaves out."""
    run = await doctor("--url", sim.url, "--json", "--no-canary", "--timeout", "5")
    http = run.check("http.api")
    phases = http["details"]["phases"]
    assert phases["dns"] == run.check("network.dns")["details"]["seconds"], run
    assert phases["connect"] == run.check("network.tcp")["details"]["seconds"], run
    assert phases["tls"] is None, run  # plain http
    shown = re.fullmatch(r"/system_stats answered in [\d.]+ ms \(connect ([\d.]+) ms, server ([\d.]+) ms, "
                         r"transfer ([\d.]+) ms\)", http["summary"])
    assert shown is not None, run
    assert shown.groups() == tuple(f"{phases[key] * 1000:.1f}" for key in ("connect", "processing", "transfer")), run


async def test_json_report_schema_and_strict(tmp_path: Path) -> None:
    """--json emits {ok, strict, targets:[{name, kind, url, checks:[{id,status,summary,hint,details}]}]};
    warnings fail only with --strict."""
    async with await start_sim(jobs_api=True) as handle:
        run = await doctor("--url", handle.url, "--json", "--no-canary", "--timeout", "2")
        strict = await doctor("--url", handle.url, "--json", "--no-canary", "--timeout", "2", "--strict")
    report = run.report()
    assert set(report) == {"ok", "strict", "targets"}
    assert report["ok"] is True and report["strict"] is False
    (target,) = report["targets"]
    assert set(target) == {"name", "kind", "url", "checks"}
    assert (target["name"], target["kind"], target["url"]) == ("127.0.0.1", "local", handle.url)
    for check in target["checks"]:
        assert set(check) == {"id", "status", "summary", "hint", "details"}, check
        assert check["status"] in {"ok", "warn", "fail", "skipped"}
        assert isinstance(check["summary"], str) and isinstance(check["details"], dict)
        assert (check["hint"] is None) == (check["status"] in {"ok", "skipped"}), check
    assert run.check("server.jobs_api")["status"] == "ok"  # this server has /api/jobs
    assert run.check("server.failures")["summary"] == "no finished jobs in history yet", run
    assert [c["id"] for c in target["checks"] if c["status"] == "warn"] == ["server.device", "server.custom_nodes"]
    assert run.code == 0, run
    assert strict.code == 1 and strict.report()["ok"] is False and strict.report()["strict"] is True, strict


async def test_multi_target_config_and_target_selection(sim: SimHandle, tmp_path: Path) -> None:
    """--config checks every target in order; --target NAME only that one."""
    gone = f"http://127.0.0.1:{closed_port()}"
    config = _config(tmp_path, _target_toml("gpu-box", sim.url) + _target_toml("gone", gone))
    both = await doctor("--config", config, "--json", "--no-canary", "--timeout", "1")
    assert [t["name"] for t in both.report()["targets"]] == ["gpu-box", "gone"]
    assert both.check("http.api", 0)["status"] == "ok"
    assert both.check("network.tcp", 1)["status"] == "fail"
    assert both.code == 1, both
    one = await doctor("--config", config, "--target", "gpu-box", "--json", "--no-canary", "--timeout", "1")
    assert [t["name"] for t in one.report()["targets"]] == ["gpu-box"]
    assert one.code == 0, one


async def test_usage_and_config_errors_exit_2(tmp_path: Path) -> None:
    """Bad options and configs exit 2 with a message on stderr, print no report, and never echo a password."""
    good = _config(tmp_path, _target_toml("a", "http://127.0.0.1:1"), "good")
    missing_token = _config(tmp_path, _target_toml("a", "http://127.0.0.1:1",
                                                   f'bearer_token_file = "{tmp_path / "nope"}"'), "token")
    cases: list[tuple[list[str], str]] = [
        (["--config", str(tmp_path / "missing.toml")], "cannot read file"),
        (["--config", good, "--target", "nope"], "no target named 'nope'"),
        (["--config", missing_token], "bearer_token_file"),
        (["--url", "ftp://127.0.0.1:21"], "command line: --url: expected http:// or https:// with a host, e.g. "
                                          "http://127.0.0.1:8188\n"),
        (["--url", f"http://monitor:{PASSWORD}@127.0.0.1:99999"], "command line: --url: invalid port\n"),
        (["--url", f"http://monitor:{PASSWORD}@[::1"], "command line: --url: not a valid URL\n"),
        (["--url", "http://127.0.0.1:1", "--workflow", str(tmp_path / "nope.json")], "--workflow: cannot read"),
        (["--cloud", "--config", good], "--cloud"),
        (["--target", "a"], "--target picks a target of --config"),
        (["--url", "http://127.0.0.1:1", "--timeout", "0"],
         "argument --timeout: expected seconds between 0 and 3600, got '0'"),
        (["--no-such-flag"], "unrecognized arguments"),
    ]
    runs = await asyncio.gather(*(doctor(*args) for args, _ in cases),
                                # --target picks from $COMFYWATCH_CONFIG as it would from --config
                                doctor("--target", "nope", env={"COMFYWATCH_CONFIG": good}))
    cases.append((["--target", "nope"], "command line: no target named 'nope'\n"))
    for run, (_, message) in zip(runs, cases, strict=True):
        assert run.code == 2, run
        assert message in run.stderr, run
        assert run.stdout == "", run
        assert PASSWORD not in run.stderr + run.stdout
        assert "Traceback" not in run.stderr, run


async def test_colours_only_on_a_tty() -> None:
    """On a terminal the marks are coloured; piped output and NO_COLOR=1 on a terminal are plain."""
    url = f"http://127.0.0.1:{closed_port()}"

    async def on_tty(env: dict[str, str]) -> str:
        leader, follower = pty.openpty()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "comfywatch", "doctor", "--url", url, "--timeout", "1",
                stdin=asyncio.subprocess.DEVNULL, stdout=follower, stderr=asyncio.subprocess.DEVNULL,
                env={**_env(), **env})
            os.close(follower)
            follower = -1
            chunks: list[bytes] = []
            while True:  # drain while it runs: a full pty buffer would block the child
                try:
                    chunk = await asyncio.to_thread(os.read, leader, 65536)
                except OSError:  # EIO once the child has closed its end
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            assert await asyncio.wait_for(process.wait(), 30 * TIMEOUT_FACTOR) == 1
        finally:
            os.close(leader)
            if follower != -1:
                os.close(follower)
        return b"".join(chunks).decode()

    env_without_no_color = {"NO_COLOR": ""}
    coloured = await on_tty(env_without_no_color)
    assert "\x1b[31m✗\x1b[0m network.tcp" in coloured, coloured
    assert "\x1b[32m✓\x1b[0m network.dns" in coloured, coloured
    plain_tty = await on_tty({"NO_COLOR": "1"})
    assert "\x1b[" not in plain_tty and "✗ network.tcp" in plain_tty, plain_tty
    piped = await doctor("--url", url, "--timeout", "1", env=env_without_no_color)
    assert "\x1b[" not in piped.stdout and "✗ network.tcp" in piped.stdout, piped


# ---------------------------------------------------------------------------------------------------------
# Deliberately broken set-ups: nothing listening, the wrong service, proxies.


async def test_closed_port_says_nothing_listens() -> None:
    """Connection refused: network.tcp fails and asks whether ComfyUI runs and on which port."""
    port = closed_port()
    run = await doctor("--url", f"http://127.0.0.1:{port}", "--timeout", "1")
    assert run.code == 1, run
    lines = run.stdout.splitlines()
    failed = next(i for i, x in enumerate(lines) if "network.tcp" in x)
    assert lines[failed].startswith("  ✗ network.tcp") and "(connection refused)" in lines[failed], run
    assert lines[failed + 1].strip().startswith(f"fix: Is ComfyUI running, and on port {port}?"), run
    assert lines[-1] == "problems found: 1 ok, 0 warnings, 1 failed, 4 skipped", run


async def test_unresolvable_host_fails_dns() -> None:
    """A host name that cannot resolve fails network.dns (an invalid name: no resolver is asked)."""
    run = await doctor("--url", "http://comfy..local:8188", "--json", "--timeout", "1")
    check = run.check("network.dns")
    assert check["status"] == "fail" and "not a valid host name" in check["summary"], run
    assert "host name does not resolve" in check["hint"]
    assert _skipped(run)["network.tcp"] == "skipped: network.dns failed"
    assert run.code == 1


WRONG_SERVICES = [
    ("html", "not with ComfyUI's /system_stats JSON", "page title 'Welcome to nginx!'", "Check the port"),
    ("json", "not with ComfyUI's /system_stats JSON", "JSON keys data, status", "Check the port"),
    ("404", "no /system_stats here", "HTTP 404, text/plain", "reverse-proxy prefix"),
]


async def test_wrong_service_on_the_port() -> None:
    """A web server that is not ComfyUI (an HTML page, another API's JSON, 404s) is called out as such."""

    async def check(case: tuple[str, str, str, str]) -> None:
        kind, summary, detail, hint = case
        async with serve(not_comfyui_app(kind)) as url:  # type: ignore[arg-type]
            run = await doctor("--url", url, "--json", "--timeout", "2")
        found = run.check("http.api")
        assert found["status"] == "fail", run
        assert summary in found["summary"] and detail in found["summary"], run
        assert detail in found["details"]["answer"]
        assert hint in found["hint"], run
        assert run.code == 1

    await each_case(WRONG_SERVICES, lambda c: c[0], check)


async def test_proxy_with_upstream_down_answers_502(tmp_path: Path) -> None:
    """A reverse proxy whose ComfyUI is not running answers 502 HTML: doctor blames the upstream."""
    async with serve(proxy_app(f"http://127.0.0.1:{closed_port()}")) as url:
        run = await doctor("--url", url, "--json", "--timeout", "2")
    check = run.check("http.api")
    assert check["status"] == "fail", run
    assert check["summary"].startswith("a proxy answers HTTP 502: the upstream ComfyUI is down"), run
    assert "page title '502 Bad Gateway'" in check["summary"] and "nginx" in check["summary"]
    assert "proxy_pass" in check["hint"]
    assert run.code == 1


async def test_proxy_stripping_the_websocket_upgrade_gets_the_nginx_fix(sim: SimHandle) -> None:
    """HTTP works through the proxy but /ws reaches ComfyUI without Upgrade: the fix prints nginx's lines."""
    options = ProxyOptions(websocket=False)
    async with serve(proxy_app(sim.url, options)) as url:
        run = await doctor("--url", url, "--timeout", "2", "--no-canary")
    assert options.seen.get("ws_stripped") == 1 and "ws_piped" not in options.seen
    assert run.code == 1, run
    lines = run.stdout.splitlines()
    assert any(x.startswith("  ✓ http.api") for x in lines), run
    failed = next(i for i, x in enumerate(lines) if "websocket.upgrade" in x)
    assert lines[failed].startswith("  ✗ websocket.upgrade") and "HTTP 400 instead of 101" in lines[failed], run
    fix = lines[failed + 1]
    assert fix.strip().startswith("fix: The /ws upgrade does not reach ComfyUI"), run
    for nginx_line in NGINX_UPGRADE_LINES:
        assert nginx_line in fix, fix


async def test_auth_proxy_needs_credentials_and_never_prints_the_password(sim: SimHandle) -> None:
    """401 without credentials; with http://user:pass@ everything passes (WebSocket and canary included), the
    password appears nowhere; a wrong password is reported as rejected credentials."""
    options = ProxyOptions(basic_auth=("monitor", PASSWORD))
    async with serve(proxy_app(sim.url, options)) as url:
        with_userinfo = url.replace("http://", f"http://monitor:{PASSWORD}@")
        anonymous, authed_json, authed_text, wrong = await asyncio.gather(
            doctor("--url", url, "--json", "--timeout", "2"),
            doctor("--url", with_userinfo, "--json", "--timeout", "5"),
            doctor("--url", with_userinfo, "--timeout", "5", "--no-canary"),
            doctor("--url", url.replace("http://", "http://monitor:not-the-password@"), "--json", "--timeout", "2"),
        )
    check = anonymous.check("http.api")
    assert check["status"] == "fail" and "401 from an authenticating proxy" in check["summary"], anonymous
    assert "proxy's credentials" in check["hint"] and "user:password@" in check["hint"]
    assert anonymous.code == 1
    assert authed_json.code == 0, authed_json
    assert all(c["status"] in {"ok", "warn"} for c in authed_json.report()["targets"][0]["checks"]), authed_json
    assert authed_json.check("websocket.upgrade")["status"] == "ok"
    assert authed_json.check("canary.run")["status"] == "ok"
    assert authed_json.check("server.exposure")["status"] == "ok"
    assert options.seen["ws_piped"] >= 2  # doctor's own check and the canary went through the proxy
    assert authed_json.report()["targets"][0]["url"] == url
    assert authed_text.code == 0 and "✓ websocket.upgrade" in authed_text.stdout, authed_text
    for run in (authed_json, authed_text, wrong):
        assert PASSWORD not in run.stdout + run.stderr, run
    rejected = wrong.check("http.api")
    assert "credentials were rejected" in rejected["summary"] and "user name and password" in rejected["hint"]
    assert "not-the-password" not in wrong.stdout + wrong.stderr


# ---------------------------------------------------------------------------------------------------------
# TLS in front of the simulator.


def _tls_config(tmp_path: Path, url: str, ca: Path, stem: str = "tls", insecure: bool = False) -> str:
    trust = "tls_insecure_skip_verify = true" if insecure else f'tls_ca_file = "{ca}"'
    return _config(tmp_path, _target_toml("tls", url, trust), stem)


async def test_valid_tls_end_to_end_with_wss(sim: SimHandle, certs: CertBundle, tmp_path: Path) -> None:
    """A CA-signed certificate: network.tls reports protocol and days left; /ws upgrades over wss; canary ok."""
    async with serve(proxy_app(sim.url), ssl_context=certs.valid.server_context()) as url:
        run = await doctor("--config", _tls_config(tmp_path, url, certs.ca_cert), "--json", "--timeout", "5")
    tls = run.check("network.tls")
    assert tls["status"] == "ok", run
    assert re.match(r"TLSv1\.[23] handshake in [\d.]+ ms, certificate verified for 127\.0\.0\.1, expires in "
                    r"(29|30) days$", tls["summary"]), tls
    assert 29 < tls["details"]["days_left"] <= 30
    assert tls["details"]["issuer"] == "CN=comfywatch test CA"
    assert run.check("websocket.upgrade")["status"] == "ok"
    assert run.check("canary.run")["status"] == "ok"
    assert run.code == 0, run


@dataclass(frozen=True)
class CertCase:
    cert: str  # a CertBundle attribute, or "expiring" (5 days left)
    status: str
    problem: str | None
    summary: str
    hint: str
    insecure: bool = False  # tls_insecure_skip_verify = true instead of trusting the test CA


CERT_CASES = [
    CertCase("expired", "fail", "expired", "expired 5 days ago", "renew it"),
    CertCase("not_yet_valid", "fail", "not_yet_valid", "expires in 40 days", "clock"),
    CertCase("self_signed", "fail", "self_signed", "certificate for localhost, 127.0.0.1, ::1", "self-signed"),
    CertCase("wrong_host", "fail", "hostname_mismatch", "certificate for wrong.example", "another name"),
    CertCase("untrusted", "fail", "untrusted_chain", "issued by CN=comfywatch untrusted CA", "full chain"),
    CertCase("expiring", "warn", None, "certificate expires in 5.0 days (warning below 14)", "Renew the certificate"),
    CertCase("expired", "warn", None, "certificate NOT verified (tls_insecure_skip_verify); it expired 5.0 days ago",
             "renew it", insecure=True),
]


async def test_certificate_problems(sim: SimHandle, certs: CertBundle, tmp_path: Path) -> None:
    """Expired, not yet valid, self-signed, wrong-host and untrusted certificates fail network.tls, each with
    its own fix (and http.api is skipped); one expiring within 14 days only warns (exit 0); with
    tls_insecure_skip_verify an expired certificate warns and HTTP and wss still work."""
    soon_ca, soon = expiring_certs(tmp_path / "soon", days=5)

    async def check(case: CertCase) -> None:
        pair, ca = (soon, soon_ca) if case.cert == "expiring" else (getattr(certs, case.cert), certs.ca_cert)
        async with serve(proxy_app(sim.url), ssl_context=pair.server_context()) as url:
            config = _tls_config(tmp_path, url, ca, f"{case.cert}-{case.insecure}", case.insecure)
            run = await doctor("--config", config, "--json", "--timeout", "2", "--no-canary")
        found = run.check("network.tls")
        assert found["status"] == case.status, run
        assert found["details"].get("problem") == case.problem, run
        assert case.summary in found["summary"], run
        assert case.hint in found["hint"], run
        if case.status == "fail":
            assert _skipped(run)["http.api"] == "skipped: network.tls failed", run
            assert run.code == 1, run
        else:
            assert run.check("http.api")["status"] == "ok", run
            assert run.check("websocket.upgrade")["status"] == "ok", run
            assert run.code == 0, run

    await each_case(CERT_CASES, lambda c: c.cert + (" (insecure)" if c.insecure else ""), check)


# ---------------------------------------------------------------------------------------------------------
# What /system_stats says about the server (rewritten by a proxy to stand in for other machines).


def _gpu(free_gib: float, total_gib: float = 24.0, kind: str = "cuda") -> Callable[[dict[str, Any]], None]:
    def edit(stats: dict[str, Any]) -> None:
        stats["devices"] = [{"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": kind, "index": 0,
                             "vram_total": int(total_gib * 2**30), "vram_free": int(free_gib * 2**30),
                             "torch_vram_total": 0, "torch_vram_free": 0}]
    return edit


def _argv(*argv: str) -> Callable[[dict[str, Any]], None]:
    def edit(stats: dict[str, Any]) -> None:
        stats["system"]["argv"] = ["main.py", *argv]
    return edit


def _low_ram(stats: dict[str, Any]) -> None:
    stats["system"]["ram_total"] = 32 * 2**30
    stats["system"]["ram_free"] = 2**30


def _machine(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(stats: dict[str, Any]) -> None:
        for one in edits:
            one(stats)
    return edit


#: Servers that differ only in what /system_stats says -> (check id, status, summary fragment, hint fragment).
MACHINES: dict[str, tuple[Callable[[dict[str, Any]], None], list[tuple[str, str, str, str | None]]]] = {
    "gpu, loopback only": (_machine(_gpu(20.0), _argv("--listen", "127.0.0.1")), [
        ("server.device", "ok", "20.0 of 24.0 GiB VRAM free", None),
        ("server.memory", "ok", "GiB RAM available", None),
        ("server.exposure", "ok", "not exposed", None),
    ]),
    "low vram, low ram, listen 0.0.0.0": (_machine(_gpu(1.0), _low_ram, _argv("--listen", "0.0.0.0")), [
        ("server.device", "warn", "1.0 of 24.0 GiB VRAM free", "--lowvram"),
        ("server.memory", "warn", "1.0 of 32.0 GiB RAM available", "Little RAM left"),
        ("server.exposure", "warn", "listening on all interfaces with no authentication",
         "anyone who can reach this port"),
    ]),
    "directml, bare --listen": (_machine(_gpu(8.0, kind="directml"), _argv("--listen", "--port", "8188")), [
        ("server.device", "warn", "has type directml: no GPU in use", "CUDA/ROCm"),
        ("server.exposure", "warn", "listening on all interfaces", "firewall the port"),
    ]),
}


async def test_server_facts(sim: SimHandle) -> None:
    """Device type, VRAM and RAM headroom and --listen exposure come from /system_stats; warnings exit 0."""

    async def check(name: str) -> None:
        edit, expected = MACHINES[name]
        async with serve(proxy_app(sim.url, ProxyOptions(edit_system_stats=edit))) as url:
            run = await doctor("--url", url, "--json", "--timeout", "2", "--no-canary")
        for check_id, status, summary, hint in expected:
            found = run.check(check_id)
            assert found["status"] == status and summary in found["summary"], (check_id, run)
            assert (found["hint"] is None) if hint is None else (hint in found["hint"]), (check_id, run)
        assert run.code == 0, run  # warnings alone do not fail

    await each_case(list(MACHINES), str, check)


async def test_clock_skew_warns(sim: SimHandle) -> None:
    """A server whose Date header is five minutes ahead gets a clock warning with the NTP fix."""
    async with serve(proxy_app(sim.url, ProxyOptions(date_offset=300))) as url:
        run = await doctor("--url", url, "--json", "--timeout", "2", "--no-canary")
    check = run.check("server.clock")
    assert check["status"] == "warn", run
    assert 295 < check["details"]["skew_seconds"] < 305, check
    assert re.match(r"server clock is \+(29[5-9]|30[0-5]) s off this host's", check["summary"]), check
    assert "NTP" in check["hint"]


@pytest.mark.parametrize("date", ["Mon, 01 Jan 2020 00:00:00 +99999999999999999999", "01 Jan 99999999999 00:00:00 GMT",
                                  "not a date"])
async def test_an_unreadable_date_header_skips_the_clock_check(sim: SimHandle, date: str) -> None:
    """A Date header no parser can read (a zone or a year that overflows, text) leaves out the clock check and
    costs no other: the server's facts are reported, no internal error."""
    async with serve(proxy_app(sim.url, ProxyOptions(date=date))) as url:
        run = await doctor("--url", url, "--json", "--timeout", "2", "--no-canary")
    checks = run.checks()
    assert "server.clock" not in checks and "doctor.internal" not in checks, run
    assert checks["server.version"]["status"] == "ok", run


# ---------------------------------------------------------------------------------------------------------
# Workflow lint against the live /object_info.

UI_WORKFLOW = {
    "last_node_id": 2, "last_link_id": 1, "version": 0.4,
    "nodes": [
        {"id": 1, "type": "EmptyImage", "pos": [0, 0], "size": [315, 130], "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [64, 64, 1, 0]},
        {"id": 2, "type": "PreviewImage", "pos": [400, 0], "size": [210, 246],
         "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [], "widgets_values": []},
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {},
}


async def test_lint_finds_missing_checkpoint_before_submitting(sim: SimHandle) -> None:
    """txt2img_missing_checkpoint.json: value_not_in_list on ckpt_name, found from /object_info, nothing posted."""
    workflow = WORKFLOWS / "txt2img_missing_checkpoint.json"
    run = await doctor("--url", sim.url, "--json", "--timeout", "5", "--no-canary", "--workflow", str(workflow))
    text = await doctor("--url", sim.url, "--timeout", "5", "--no-canary", "--workflow", str(workflow))
    check = run.check("workflow.lint")
    assert check["status"] == "fail", run
    assert "found before submitting" in check["summary"]
    (problem,) = check["details"]["problems"]
    assert (problem["node_id"], problem["class_type"], problem["code"]) == ("4", "CheckpointLoaderSimple",
                                                                            "value_not_in_list")
    assert "ckpt_name" in problem["message"] and "does_not_exist.safetensors" in problem["message"]
    assert run.code == 1 and text.code == 1
    assert "    node 4 (CheckpointLoaderSimple): value_not_in_list: ckpt_name 'does_not_exist.safetensors'" \
        in text.stdout, text
    state = sim.state()
    assert state["jobs_submitted"] == 0 and state["history"] == [] and state["number"] == 0, state


async def test_lint_ui_format_says_save_api_format(sim: SimHandle, tmp_path: Path) -> None:
    """A workflow saved from the editor (UI format) is refused with the "Save (API Format)" instruction."""
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(UI_WORKFLOW), encoding="utf-8")
    run = await doctor("--url", sim.url, "--json", "--timeout", "5", "--no-canary", "--workflow", str(path))
    check = run.check("workflow.lint")
    assert check["status"] == "fail" and "UI-format" in check["summary"], run
    assert 'Save (API Format)' in check["hint"]
    assert run.code == 1


async def test_lint_a_directory_lints_each_workflow_in_it(sim: SimHandle, tmp_path: Path) -> None:
    """--workflow DIR: one workflow.lint per *.json file, in name order, each naming its file; a file that is not
    a workflow is a finding of its own; other files are ignored. An empty directory is a usage error."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name in ("canary_preview_image.json", "txt2img_missing_checkpoint.json"):
        (folder / name).write_bytes((WORKFLOWS / name).read_bytes())
    (folder / "editor.json").write_text(json.dumps(UI_WORKFLOW), encoding="utf-8")
    (folder / "broken.json").write_text("{not json", encoding="utf-8")
    (folder / "README.txt").write_text("not a workflow", encoding="utf-8")
    run = await doctor("--url", sim.url, "--json", "--timeout", "5", "--no-canary", "--workflow", str(folder))
    lints = [(c["status"], c["summary"]) for c in run.report()["targets"][0]["checks"] if c["id"] == "workflow.lint"]
    assert lints == [
        ("fail", f"{folder / 'broken.json'} is not valid JSON"),
        ("ok", "canary_preview_image.json: no problems found"),
        ("fail", "editor.json: this is a UI-format workflow, not API format"),
        ("fail", "1 problem(s) in txt2img_missing_checkpoint.json: ComfyUI would reject it (found before submitting)"),
    ], run
    assert run.code == 1, run
    empty = tmp_path / "empty"
    empty.mkdir()
    usage = await doctor("--url", sim.url, "--no-canary", "--workflow", str(empty))
    assert (usage.code, usage.stdout) == (2, ""), usage
    assert usage.stderr == f"comfywatch doctor: --workflow: {empty} holds no .json workflow\n", usage


async def test_lint_valid_workflow_passes(sim: SimHandle) -> None:
    """An API-format workflow whose nodes and inputs the server knows passes the lint."""
    workflow = WORKFLOWS / "canary_preview_image.json"
    run = await doctor("--url", sim.url, "--json", "--timeout", "5", "--no-canary", "--workflow", str(workflow))
    check = run.check("workflow.lint")
    assert check["status"] == "ok" and "no problems found" in check["summary"], run
    assert run.code == 0, run


# ---------------------------------------------------------------------------------------------------------
# Comfy Cloud (the simulated API).


@pytest.fixture
async def cloud() -> AsyncIterator[SimHandle]:
    async with await start_sim(cloud=True, cloud_api_keys=[CLOUD_KEY]) as handle:
        yield handle


async def _cloud_doctor(handle: SimHandle, *args: str, key: str | None = CLOUD_KEY) -> Run:
    env = {"COMFYWATCH_CLOUD_API_KEY": key} if key else {}
    return await doctor("--cloud", "--url", handle.url, "--timeout", "3", *args, env=env)


async def test_cloud_healthy_account(cloud: SimHandle) -> None:
    """Key valid, subscription active, funds, balance and plan concurrency: all ✓, exit 0, key never shown."""
    run = await _cloud_doctor(cloud)
    assert run.code == 0, run
    marks = {m[2]: (m[1], m[3]) for line in run.stdout.splitlines() if (m := CHECK_LINE.match(line))}
    assert {k: v[0] for k, v in marks.items()} == {
        "cloud.auth": "✓", "cloud.subscription": "✓", "cloud.funds": "✓", "cloud.balance": "✓",
        "cloud.concurrency": "✓", "cloud.recent_errors": "✓"}, run
    assert marks["cloud.balance"][1] == "balance $60.00 (effective $60.00)"
    assert marks["cloud.concurrency"][1] == "plan allows 3 concurrent jobs, 0 running"
    assert marks["cloud.recent_errors"][1] == "no jobs on this account yet"
    assert CLOUD_KEY not in run.stdout + run.stderr


CLOUD_FAULTS = [
    ("http_401", "cloud.auth", "auth: HTTP 401", "platform.comfy.org/profile/api-keys"),
    ("http_429_rate", "cloud.auth", "rate_limited: HTTP 429", "Retry-After"),
    ("http_5xx", "cloud.auth", "server_error: HTTP 500", "Comfy status page"),
    ("inactive_subscription", "cloud.subscription", "(inactive)", "activate a paid subscription"),
    ("http_402", "cloud.funds", "no funds", "add credits"),
    ("balance_error", "cloud.balance", "server_error", "Comfy status page"),
]


async def test_cloud_faults() -> None:
    """Each account problem fails its own check with a Cloud-specific fix; exit 1; the key is never shown."""

    async def check(case: tuple[str, str, str, str]) -> None:
        fault, check_id, summary, hint = case
        async with await start_sim(cloud=True, cloud_api_keys=[CLOUD_KEY], faults=[fault]) as handle:
            run = await _cloud_doctor(handle, "--json")
        found = run.check(check_id)
        assert found["status"] == "fail", run
        assert summary in found["summary"], run
        assert hint in found["hint"], run
        assert run.code == 1
        if check_id == "cloud.auth":
            assert set(_skipped(run)) == {"cloud.subscription", "cloud.funds", "cloud.balance", "cloud.concurrency",
                                          "cloud.recent_errors"}, run
        assert CLOUD_KEY not in run.stdout + run.stderr

    await each_case(CLOUD_FAULTS, lambda c: c[0], check)


async def test_cloud_without_key_or_with_a_wrong_one(cloud: SimHandle) -> None:
    """No key: cloud.auth says how to provide one; a wrong key: 401 with the create-a-key fix."""
    none, wrong = await asyncio.gather(_cloud_doctor(cloud, "--json", key=None),
                                       _cloud_doctor(cloud, "--json", key="ck-wrong-key-0000"))
    assert none.check("cloud.auth")["summary"] == "no API key configured", none
    assert "COMFYWATCH_CLOUD_API_KEY" in none.check("cloud.auth")["hint"]
    assert wrong.check("cloud.auth")["status"] == "fail" and "rejected the API key" in wrong.check("cloud.auth")["hint"]
    assert none.code == 1 and wrong.code == 1
    assert "ck-wrong-key-0000" not in wrong.stdout + wrong.stderr


async def test_a_configured_key_file_that_is_missing_exits_2_but_no_key_at_all_exits_1(
        cloud: SimHandle, tmp_path: Path) -> None:
    """A config naming an api_key_file that does not exist is a configuration error (exit 2, stderr, no
    report); a Cloud target with no key from anywhere is a finding (cloud.auth fails, exit 1)."""
    missing = tmp_path / "cloud.key"
    account = f'[[targets]]\nname = "acct"\nkind = "cloud"\nurl = "{cloud.url}"\n'
    named = _config(tmp_path, account + f'api_key_file = "{missing}"\n', "named")
    keyless = _config(tmp_path, account, "keyless")
    bad, none = await asyncio.gather(doctor("--config", named, "--json", "--timeout", "3"),
                                     doctor("--config", keyless, "--json", "--timeout", "3"))
    assert bad.code == 2, bad
    assert bad.stdout == "", bad
    assert bad.stderr == f"{named}: targets[0]: cannot read api_key_file '{missing}': No such file or directory\n", bad
    assert none.code == 1, none
    auth = none.check("cloud.auth")
    assert (auth["status"], auth["summary"]) == ("fail", "no API key configured"), none
    assert "COMFYWATCH_CLOUD_API_KEY" in auth["hint"], none
    assert none.stderr == "", none


async def test_cloud_low_balance_and_plan_concurrency(cloud: SimHandle) -> None:
    """Less than $1 left warns (exit 0); a Pro plan reports 5 concurrent jobs."""
    assert cloud.cloud is not None
    sim_cloud: Any = cloud.cloud
    sim_cloud.balance_cents = 50
    sim_cloud.tier = "PRO"
    run = await _cloud_doctor(cloud, "--json")
    balance = run.check("cloud.balance")
    assert balance["status"] == "warn" and balance["summary"].startswith("balance $0.50"), run
    assert "add credits" in balance["hint"]
    assert run.check("cloud.concurrency")["details"]["max_concurrent_jobs"] == 5
    assert run.code == 0, run


async def test_failed_jobs_of_comfywatch_s_own_canaries_are_not_the_server_s_failures() -> None:
    """server.failures judges the jobs the daemon's jobs check would count: a failed job of another comfywatch
    (a daemon's canary, client id ``comfywatch-…``) is not one of the users' failures, another client's is."""
    async with await start_sim(faults=["execution_error"]) as handle:
        await handle.submit(job_ms=5, client_id="comfywatch-canary-0123456789abcdef")
        await eventually(lambda: asyncio.sleep(0, handle.state()), lambda s: s["jobs_failed"] >= 1,
                         timeout=10, what="the canary's failed job")
        ours = await doctor("--url", handle.url, "--json", "--timeout", "5", "--no-canary")
        await handle.submit(job_ms=5)
        await eventually(lambda: asyncio.sleep(0, handle.state()), lambda s: s["jobs_failed"] >= 2,
                         timeout=10, what="another client's failed job")
        theirs = await doctor("--url", handle.url, "--json", "--timeout", "5", "--no-canary")
    assert ours.check("server.failures")["summary"] == "no finished jobs in history yet", ours
    failures = theirs.check("server.failures")
    assert failures["status"] == "warn" and failures["details"]["recent"] == 1, theirs


async def test_a_custom_node_pack_that_failed_to_import_is_named_with_its_error_and_fix() -> None:
    """server.custom_nodes reads the server's start-up log: a broken custom pack fails the check, naming the pack
    and the exception line; a server without the log route is skipped, not judged."""
    async with await start_sim() as handle:
        await handle.deploy(broken={"broken_pack": "No module named 'does_not_exist_module'"})
        run = await doctor("--url", handle.url, "--json", "--no-canary", "--timeout", "5")
        text = await doctor("--url", handle.url, "--no-canary", "--timeout", "5")
        old = await doctor("--url", handle.url + "/api", "--json", "--no-canary", "--timeout", "5")
    check = run.check("server.custom_nodes")
    assert (check["status"], check["summary"]) == (
        "fail", "1 custom node pack(s) failed to import at start: broken_pack"), run
    assert check["hint"] == DIAGNOSIS_HINTS[Diagnosis.CUSTOM_NODES_FAILED]
    assert check["details"]["failed"][0] == {"pack": "broken_pack", "builtin": False,
                                             "error": "No module named 'does_not_exist_module'"}
    assert "      broken_pack: No module named 'does_not_exist_module'" in text.stdout.splitlines(), text
    assert run.code == 1
    skipped = old.check("server.custom_nodes")
    assert skipped["status"] == "skipped" and "no /internal/logs/raw here" in skipped["summary"], old


async def test_cloud_billing_data_gap_is_not_an_empty_account() -> None:
    """$0.00 with no funds and no plan is how Comfy Cloud answers while billing data is missing: doctor says
    the balance is unknown (as the daemon exports none), not "add credits" to an account that may be paying."""
    async with await start_sim(cloud=True, cloud_api_keys=[CLOUD_KEY], faults=["inactive_subscription"]) as handle:
        account: Any = handle.cloud
        account.balance_cents = 0
        run = await _cloud_doctor(handle, "--json")
    balance = run.check("cloud.balance")
    assert (balance["status"], balance["summary"]) == (
        "warn", "balance unknown ($0.00 with no funds and no plan: a gap in Comfy Cloud's billing data)"), run
    assert balance["hint"] == DIAGNOSIS_HINTS[Diagnosis.BILLING_DATA_GAP], run


async def test_cloud_auth_asks_again_after_a_401_as_the_daemon_does() -> None:
    """api.comfy.org has intermittent false 401s: doctor's cloud.auth is the auth check's observation, which asks
    a second time before calling the key rejected."""
    async with await start_sim(cloud=True, cloud_api_keys=[CLOUD_KEY], faults=["http_401"]) as handle:
        run = await _cloud_doctor(handle, "--json")
        asked = handle.state()["requests_by_method"].get("GET /api/user")
    assert run.check("cloud.auth")["status"] == "fail", run
    assert asked == 2, asked


async def test_cloud_unknown_concurrency_is_not_a_tick() -> None:
    """Without an active subscription /api/features gives no concurrency limit: cloud.concurrency says it is
    unknown and why, with the neutral mark, never a ✓ with a '?'."""
    async with await start_sim(cloud=True, cloud_api_keys=[CLOUD_KEY], faults=["inactive_subscription"]) as handle:
        text, as_json = await asyncio.gather(_cloud_doctor(handle), _cloud_doctor(handle, "--json"))
    summary = "concurrency limit unknown: Comfy Cloud gives none without an active subscription; 0 running"
    check = as_json.check("cloud.concurrency")
    assert (check["status"], check["summary"], check["hint"]) == ("skipped", summary, None), as_json
    assert check["details"] == {"max_concurrent_jobs": None, "running": 0}, as_json
    marks = {m[2]: (m[1], m[3]) for line in text.stdout.splitlines() if (m := CHECK_LINE.match(line))}
    assert marks["cloud.concurrency"] == ("-", summary), text
    assert "?" not in text.stdout, text


async def test_cloud_recent_billing_failures(cloud: SimHandle) -> None:
    """A job that failed for lack of funds shows up in cloud.recent_errors with the billing fix."""
    await cloud.set_faults(["insufficient_funds_runtime"])
    workflow = json.loads((WORKFLOWS / "canary_preview_image.json").read_text(encoding="utf-8"))
    async with aiohttp.ClientSession(headers={"X-API-Key": CLOUD_KEY}) as session:
        async with session.post(f"{cloud.url}/api/prompt", json={"prompt": workflow}) as response:
            assert response.status == 200, await response.text()

        async def failed_jobs() -> int:
            async with session.get(f"{cloud.url}/api/jobs") as answer:
                body = await answer.json()
            return sum(1 for job in body.get("jobs", []) if job.get("status") == "failed")

        await eventually(failed_jobs, lambda n: n >= 1, timeout=10, what="the job to fail for funds")
    run = await _cloud_doctor(cloud, "--json")
    check = run.check("cloud.recent_errors")
    assert check["status"] == "warn", run
    assert check["summary"] == "1 of the last 1 jobs failed, 1 for billing reasons", check
    assert "add credits" in check["hint"]
    assert run.code == 0, run
