"""check-config (and run) on hostile configuration files, as real processes: one ``source: problem`` line on
stderr, nothing on stdout, exit code 2 and never a traceback, whatever the file is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.test_cli_first_run import ENV, REPO

pytestmark = pytest.mark.e2e

DIGITS = sys.get_int_max_str_digits()


def check_config(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "comfywatch", "check-config", *args], capture_output=True,
                          text=True, cwd=REPO, env={**ENV, **(env or {})}, stdin=subprocess.DEVNULL,
                          timeout=60 * TIMEOUT_FACTOR)


def assert_refused(result: subprocess.CompletedProcess[str], stderr: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "comfywatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[server]\nmax_concurrency = " + "9" * (DIGITS + 1) + "\n",
         f"invalid TOML: an integer has more than {DIGITS} digits"),
        ("[server]\nmax_concurrency = 0x" + "f" * 4000 + "\n", "server.max_concurrency: must be at most 10000"),
        ('[defaults]\ninterval = "0s"\n', "defaults.interval: must be at least 1s (got '0s')"),
        ('[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\ninterval = "1ms"\n',
         "targets[0].interval: must be at least 1s (got '1ms')"),
        ('[defaults]\ninterval = "2s"\ntimeout = "5s"\n', "defaults.timeout: must be shorter than the interval (2s)"),
        ('[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\ninterval = "1s"\ntimeout = "2s"\n',
         "targets[0].timeout: must be shorter than the interval (1s)"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "invalid TOML: nested too deeply"),
    ],
)
def test_hostile_values(tmp_path: Path, text: str, problem: str) -> None:
    """Huge integers, a zero or millisecond interval, a timeout over the interval (of [defaults] or of a target),
    absurd nesting: one line each."""
    path = write(tmp_path, text)
    assert_refused(check_config(str(path)), f"{path}: {problem}\n")


def test_run_refuses_a_zero_interval_before_starting(tmp_path: Path) -> None:
    """run validates like check-config: interval = "0s" never reaches the scheduler (it divided by zero there)."""
    path = write(tmp_path, '[defaults]\ninterval = "0s"\n')
    result = subprocess.run([sys.executable, "-m", "comfywatch", "run", "--config", str(path), "--listen",
                             "127.0.0.1:0"], capture_output=True, text=True, cwd=REPO, env=ENV,
                            stdin=subprocess.DEVNULL, timeout=60 * TIMEOUT_FACTOR)
    assert_refused(result, f"{path}: defaults.interval: must be at least 1s (got '0s')\n")


def test_a_directory(tmp_path: Path) -> None:
    assert_refused(check_config(str(tmp_path)), f"{tmp_path}: cannot read file: Is a directory\n")


def test_a_file_over_the_size_bound(tmp_path: Path) -> None:
    """A 5 GB (sparse) file is refused by its size, without reading it."""
    path = tmp_path / "huge.toml"
    with path.open("wb") as file:
        file.truncate(5 * 10**9)
    assert_refused(check_config(str(path)), f"{path}: cannot read file: larger than 1MiB\n")


def test_an_endless_device() -> None:
    assert_refused(check_config("/dev/zero"), "/dev/zero: cannot read file: not a regular file\n")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: check-config refuses it at once instead."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    assert_refused(check_config(str(fifo)), f"{fifo}: cannot read file: not a regular file\n")


def test_permission_denied(tmp_path: Path) -> None:
    """A file the process may not read (as root: run without the capabilities that bypass file modes)."""
    path = write(tmp_path, "")
    path.chmod(0)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads any file, and setpriv (util-linux) is missing to drop that capability")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search")
    assert_refused(check_config(str(path), prefix=prefix), f"{path}: cannot read file: Permission denied\n")


def test_undecodable_environment() -> None:
    """A label value from the environment with bytes that are not UTF-8 is a problem of its own, not a crash of
    the exporter later."""
    env = {"COMFYWATCH_TARGETS__0__NAME": "a", "COMFYWATCH_TARGETS__0__URL": "http://127.0.0.1:1",
           "COMFYWATCH_TARGETS__0__LABELS__RACK": "r\udcff"}
    assert_refused(check_config(env=env), "environment: targets[0].labels.rack: not valid UTF-8\n")


@pytest.mark.parametrize(("web_config", "problem"), [
    ("tls_server_config:\n  cert_file: \"a\\0b\"\n", "tls_server_config.cert_file must not contain a NUL character"),
    ("[" * 5000 + "]" * 5000 + "\n", "invalid YAML: nested too deeply"),
    (None, "cannot read web config: not a regular file"),
], ids=["nul-in-a-file-name", "nested-5000-deep", "a-device"])
def test_a_web_config_run_would_refuse_is_refused(tmp_path: Path, web_config: str | None, problem: str) -> None:
    """check-config reads the web config as run does: one that run would refuse (here a NUL in a file name, YAML
    nested 5000 deep, /dev/zero) exits 2 with the same line, never a traceback."""
    web = tmp_path / "web.yml"
    if web_config is None:
        web = Path("/dev/zero")
    else:
        web.write_text(web_config, encoding="utf-8")
    path = write(tmp_path, f'[server]\nweb_config_file = "{web}"\n[[targets]]\nname = "x"\nurl = "http://127.0.0.1:1"\n')
    assert_refused(check_config(str(path)), f"{web}: {problem}\n")


def test_a_file_name_with_escapes_or_bytes_that_are_not_utf8_prints_as_one_safe_line(tmp_path: Path) -> None:
    """The OK line and a problem's line name the file as the terminal can show it: a terminal escape in the name
    is no escape on the screen, and a byte that is not UTF-8 is a replacement character, not an encoding error."""
    name = os.fsencode(tmp_path) + b"/\xff\x1b[31mred"
    good, bad = name + b".toml", name + b"-bad.toml"
    with open(good, "wb") as file:
        file.write(b'[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\n')
    with open(bad, "wb") as file:
        file.write(b"bad")
    shown = f"{tmp_path}/\ufffd [31mred"
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    ok = check_config(os.fsdecode(good), env=strict)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout == f"{shown}.toml: OK (1 target: a; listen 127.0.0.1:9877)\n"
    problem = "invalid TOML: Expected '=' after a key in a key/value pair (at end of document)"
    assert_refused(check_config(os.fsdecode(bad), env=strict), f"{shown}-bad.toml: {problem}\n")
