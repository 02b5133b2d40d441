"""The first run of each command, as a real process: the example config, readable logs on a terminal, and
usage or configuration problems as one plain line each on stderr with exit code 2.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT_FACTOR
from tests.ports import closed_port

REPO = Path(__file__).resolve().parents[2]
#: The developer's COMFYWATCH_* settings and a journal connection must not leak into the commands.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COMFYWATCH_") and k != "JOURNAL_STREAM"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: A console log line: time, [level], event, [logger], key=value pairs.
CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[(debug|info|warning|error|critical)\s*\] \S+")


def comfywatch(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "comfywatch", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, stdin=subprocess.DEVNULL, timeout=60 * TIMEOUT_FACTOR)


def write(tmp_path: Path, text: str, name: str = "comfywatch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# check-config and the example config.


def test_example_config_passes_check_config() -> None:
    """`comfywatch check-config comfywatch.example.toml` (the Quick start's step) exits 0 and names the target."""
    result = comfywatch("check-config", "comfywatch.example.toml")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "comfywatch.example.toml: OK (1 target: local; listen 127.0.0.1:9877)\n"


def test_check_config_names_the_targets(tmp_path: Path) -> None:
    """The OK line lists target names (not kinds); past ten it counts the rest."""
    two = write(tmp_path, '[[targets]]\nname = "foo"\nurl = "http://127.0.0.1:1"\n'
                          '[[targets]]\nname = "bar"\nkind = "cloud"\n', "two.toml")
    result = comfywatch("check-config", str(two))
    assert (result.returncode, result.stdout) == (0, f"{two}: OK (2 targets: foo, bar; listen 127.0.0.1:9877)\n")
    many = write(tmp_path, "".join(f'[[targets]]\nname = "t{i}"\nurl = "http://127.0.0.1:{i + 1}"\n'
                                   for i in range(12)), "many.toml")
    result = comfywatch("check-config", str(many))
    names = ", ".join(f"t{i}" for i in range(10))
    assert result.stdout == f"{many}: OK (12 targets: {names} and 2 more; listen 127.0.0.1:9877)\n"


def test_check_config_suggests_the_closest_key(tmp_path: Path) -> None:
    """A misspelt key at any level names the key it probably meant; exit 2, nothing on stdout."""
    path = write(tmp_path, '[defaults]\nintervall = "15s"\n[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\n'
                           '[targets.canary]\nwhen_bussy = "queue"\n')
    result = comfywatch("check-config", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"{path}: defaults.intervall: unknown key — did you mean 'interval'?\n"
                             f"{path}: targets[0].canary.when_bussy: unknown key — did you mean 'when_busy'?\n")


# ---------------------------------------------------------------------------------------------------------
# Configuration and usage problems: the same lines from every command.


def test_every_command_reports_an_invalid_config_like_check_config(tmp_path: Path) -> None:
    """run, doctor and canary print check-config's lines for a bad file: every problem, plain text, exit 2."""
    path = write(tmp_path, '[defaults]\ntimeout = "soon"\n[[targets]]\nname = "a"\nurl = "127.0.0.1:8188"\n')
    expected = (f"{path}: defaults.timeout: invalid duration 'soon': use a number with a unit, e.g. \"15s\", "
                f"\"10m\", \"1h\" (got 'soon')\n"
                f"{path}: targets[0]: url: expected http:// or https:// with a host, e.g. http://127.0.0.1:8188\n")
    for args in (["check-config", str(path)], ["run", "--config", str(path), "--listen", "127.0.0.1:0"],
                 ["doctor", "--config", str(path)], ["canary", "--config", str(path)]):
        result = comfywatch(*args)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", expected), args


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not-a-url", "expected http:// or https:// with a host, e.g. http://127.0.0.1:8188"),
        ("127.0.0.1:8188", "expected http:// or https:// with a host, e.g. http://127.0.0.1:8188"),
        ("http://127.0.0.1:99999", "invalid port"),
    ],
)
def test_canary_bad_url(url: str, problem: str) -> None:
    """`canary --url` names what is wrong with the URL instead of a pydantic summary; exit 2."""
    result = comfywatch("canary", "--url", url)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"command line: --url: {problem}\n")


def test_canary_unknown_target(tmp_path: Path) -> None:
    """`canary --target` naming no target of the config is a command-line error."""
    path = write(tmp_path, '[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\n')
    result = comfywatch("canary", "--config", str(path), "--target", "b")
    assert (result.returncode, result.stdout, result.stderr) == (2, "", "command line: no target named 'b'\n")


@pytest.mark.parametrize("command", ["canary", "doctor"])
def test_timeout_must_be_positive(command: str) -> None:
    """A zero --timeout is a usage error before anything is contacted."""
    result = comfywatch(command, "--url", "http://127.0.0.1:1", "--timeout", "0")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.endswith(
        f"comfywatch {command}: error: argument --timeout: expected seconds between 0 and 3600, got '0'\n")


def test_run_bad_log_level() -> None:
    """An unknown --log-level is one line and exit 2, not a traceback."""
    result = comfywatch("run", "--log-level", "loud", "--listen", "127.0.0.1:0")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "command line: unknown log level 'loud'; use one of debug, info, warning, error, critical\n"


def test_doctor_help_states_the_exit_codes() -> None:
    """`doctor --help` says what 0, 1 and 2 mean."""
    result = comfywatch("doctor", "--help")
    assert result.returncode == 0
    assert result.stdout.endswith(
        "exit codes:\n"
        "  0  nothing failed (warnings alone do not fail)\n"
        "  1  at least one check failed, or a warning was raised with --strict\n"
        "  2  usage or configuration error: an invalid config, an unknown --target, a\n"
        "     malformed --url, an unreadable --workflow or a missing credential file\n"
        "     (printed on stderr, with no report)\n"), result.stdout


# ---------------------------------------------------------------------------------------------------------
# Log format: readable on a terminal, JSON for machines.


def run_until_unreachable(tmp_path: Path, *extra: str, tty: bool) -> dict[str, str]:
    """`comfywatch run` on a target nothing listens for, until it logs that (``check_failed``), then SIGTERM
    (exit 0). Returns what each output received: {"tty": ...} when stdout and stderr are one terminal, else
    {"stdout": ..., "stderr": ...}."""
    config = write(tmp_path, f'state_dir = "{tmp_path}"\n[[targets]]\nname = "gone"\n'
                             f'url = "http://127.0.0.1:{closed_port()}"\n', f"run-{time.monotonic_ns()}.toml")
    command = [sys.executable, "-m", "comfywatch", "run", "--config", str(config), "--listen", "127.0.0.1:0", *extra]
    received: dict[int, bytearray] = {}
    names: dict[int, str] = {}
    leader = -1
    if tty:
        leader, follower = pty.openpty()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=ENV)
        os.close(follower)
        names[leader] = "tty"
    else:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=ENV)
        assert process.stdout is not None and process.stderr is not None
        names = {process.stdout.fileno(): "stdout", process.stderr.fileno(): "stderr"}
    received = {fd: bytearray() for fd in names}
    open_fds = set(names)

    def read_until(failure_seen: bool, deadline: float) -> None:
        """Read every output until the failure is logged, or (``failure_seen=False``) until all are closed."""
        while open_fds and not (failure_seen and any(b"check_failed" in data for data in received.values())):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"outputs still open at the deadline: {received}"
            ready, _, _ = select.select(list(open_fds), [], [], remaining)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed its end of the pty
                    chunk = b""
                if chunk:
                    received[fd] += chunk
                else:
                    open_fds.discard(fd)

    try:
        read_until(True, time.monotonic() + 30 * TIMEOUT_FACTOR)
        assert open_fds, f"comfywatch run exited early: {received}"
        process.send_signal(signal.SIGTERM)
        read_until(False, time.monotonic() + 10 * TIMEOUT_FACTOR)
        assert process.wait(10 * TIMEOUT_FACTOR) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if leader != -1:
            os.close(leader)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    return {names[fd]: ANSI.sub("", data.decode()).replace("\r\n", "\n") for fd, data in received.items()}


def assert_console(text: str) -> None:
    # Every line, the shutdown's included: a check it cancels ends without a traceback.
    lines = text.splitlines()
    assert lines and all(CONSOLE_LINE.match(line) for line in lines), text
    assert any(re.match(r".* \[info\s*\] listening\s+\[comfywatch\.daemon\] address=127\.0\.0\.1:\d+", line)
               for line in lines), text
    assert any(re.match(r".* \[warning\s*\] check_failed\s+\[comfywatch\.daemon\] .*reason=connect target=gone",
                        line) for line in lines), text


def assert_json(text: str) -> None:
    events = [json.loads(line) for line in text.splitlines()]
    assert {"listening", "started", "check_failed", "stopping"} <= {e["event"] for e in events}, text


def test_console_lines_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal (stdout and stderr) `run` logs readable lines, not JSON."""
    assert_console(run_until_unreachable(tmp_path, tty=True)["tty"])


def test_json_when_forced_on_a_terminal(tmp_path: Path) -> None:
    """--log-format json keeps JSON even on a terminal."""
    assert_json(run_until_unreachable(tmp_path, "--log-format", "json", tty=True)["tty"])


def test_json_on_stdout_through_pipes(tmp_path: Path) -> None:
    """Piped (as under systemd, or `| jq`), `run` logs JSON on stdout and nothing on stderr."""
    output = run_until_unreachable(tmp_path, tty=False)
    assert_json(output["stdout"])
    assert output["stderr"] == ""


def test_console_when_forced_through_pipes(tmp_path: Path) -> None:
    """--log-format console writes readable lines to stderr even when it is a pipe."""
    output = run_until_unreachable(tmp_path, "--log-format", "console", tty=False)
    assert_console(output["stderr"])
    assert output["stdout"] == ""


# ---------------------------------------------------------------------------------------------------------
# run: the listen address, the command-line overrides, the first failure.


def test_run_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    """A port another process listens on: one plain line on stderr naming the address and the way out, exit 1."""
    config = write(tmp_path, f'[[targets]]\nname = "a"\nurl = "http://127.0.0.1:{closed_port()}"\n')
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = comfywatch("run", "--config", str(config), "--listen", f"127.0.0.1:{port}")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"cannot listen on 127.0.0.1:{port}: address already in use "
                             "(another comfywatch? use --listen HOST:PORT)\n")


@pytest.mark.parametrize(("option", "value", "location"),
                         [("--listen", "nowhere", "server.listen"), ("--shard", "3/2", "server.shard")])
def test_run_reports_a_bad_override_like_check_config(option: str, value: str, location: str) -> None:
    """A bad --listen or --shard is one `command line: location: problem (got ...)` line, exit 2, not a pydantic
    summary. (The problem's wording is the config validator's.)"""
    result = comfywatch("run", option, value)
    assert (result.returncode, result.stdout) == (2, "")
    assert re.fullmatch(rf"command line: {re.escape(location)}: expected [^\n]+ \(got '{re.escape(value)}'\)\n",
                        result.stderr), result.stderr


def test_the_first_unreachable_log_line_names_the_url_and_the_fix(tmp_path: Path) -> None:
    """The first `check_failed` of a target nothing listens for says which URL failed and what to do about it,
    with the target's own host and port in the hint."""
    output = run_until_unreachable(tmp_path, tty=False)
    failed = next(event for event in map(json.loads, output["stdout"].splitlines())
                  if event["event"] == "check_failed")
    address = failed["url"].removeprefix("http://")
    assert failed["url"] == f"http://{address}" and re.fullmatch(r"127\.0\.0\.1:\d+", address), failed
    assert failed["reason"] == "connect"
    assert failed["hint"].startswith(f"Is ComfyUI running on {address}? Start it, or set url in the config."), failed


def test_run_reports_an_invalid_web_config_file_and_exits_2(tmp_path: Path) -> None:
    """A web_config_file with an unknown key: its problem on one line (file and key), exit 2, nothing started."""
    web = write(tmp_path, "bogus: 1\n", "web.yml")
    config = write(tmp_path, f'[server]\nweb_config_file = "{web}"\n'
                             f'[[targets]]\nname = "a"\nurl = "http://127.0.0.1:{closed_port()}"\n')
    result = comfywatch("run", "--config", str(config), "--listen", "127.0.0.1:0")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"{web}: unknown key 'bogus'") and result.stderr.count("\n") == 1, result.stderr
