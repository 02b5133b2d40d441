"""The config loader is total: whatever the file or the environment holds, ``load_config`` returns a Config or
raises ConfigError with one printable line per problem. Nothing else escapes: check-config, run and reload
all rely on that (a traceback would exit 1 instead of 2, and a reload would die without being reported)."""

from __future__ import annotations

import difflib
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.config import (
    MAX_CONFIG_BYTES,
    MAX_PROBLEM_CHARS,
    MAX_PROBLEMS,
    MAX_SECRET_BYTES,
    Config,
    ConfigError,
    load_config,
)
from tests.certs import make_certs
from tests.strategies import FUZZ

DIGITS = sys.get_int_max_str_digits()


def problems_of(path: Path | None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return info.value.problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "comfywatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


class TestHostileFiles:
    def test_integer_over_the_digit_limit(self, tmp_path: Path) -> None:
        """An integer of more digits than int() converts is a TOML problem, not a ValueError traceback."""
        path = write(tmp_path, "[server]\nmax_concurrency = " + "9" * (DIGITS + 1) + "\n")
        assert problems_of(path) == [f"invalid TOML: an integer has more than {DIGITS} digits"]

    def test_hexadecimal_integer_too_long_to_print(self, tmp_path: Path) -> None:
        """A hexadecimal integer has no digit limit, but str() of it does: the message must not call str() on it."""
        path = write(tmp_path, "[server]\nmax_concurrency = 0x" + "f" * 4000 + "\n")
        assert problems_of(path) == ["server.max_concurrency: must be at most 10000"]

    def test_hexadecimal_integer_as_a_string_field(self, tmp_path: Path) -> None:
        """The same integer where a string belongs is a type problem, not a crash."""
        path = write(tmp_path, "[server]\nlisten = 0x" + "f" * 4000 + "\n")
        assert problems_of(path) == ["server.listen: Input should be a valid string"]

    def test_a_directory(self, tmp_path: Path) -> None:
        """A directory named as the config is one line."""
        assert problems_of(tmp_path) == ["cannot read file: Is a directory"]

    def test_a_file_over_the_size_bound(self, tmp_path: Path) -> None:
        """A file over the bound is refused before it is read, at once."""
        path = tmp_path / "huge.toml"
        with path.open("wb") as file:
            file.truncate(MAX_CONFIG_BYTES + 1)
        started = time.monotonic()
        assert problems_of(path) == ["cannot read file: larger than 1MiB"]
        assert time.monotonic() - started < 1

    def test_an_endless_device(self) -> None:
        """/dev/zero never ends: a device is no config file, refused without reading it."""
        assert problems_of(Path("/dev/zero")) == ["cannot read file: not a regular file"]

    def test_a_fifo_without_a_writer(self, tmp_path: Path) -> None:
        """A FIFO (opening one waits for a writer, which never comes) is refused at once; so is a directory."""
        fifo = tmp_path / "config.toml"
        os.mkfifo(fifo)
        assert problems_of(fifo) == ["cannot read file: not a regular file"]
        assert problems_of(tmp_path) == ["cannot read file: Is a directory"]

    def test_a_secret_file_that_is_no_regular_file(self, tmp_path: Path) -> None:
        """A secret file pointing at /dev/zero or a FIFO is a config problem, found without waiting."""
        fifo = tmp_path / "key"
        os.mkfifo(fifo)
        for secret in ("/dev/zero", str(fifo)):
            path = write(tmp_path, f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key_file = "{secret}"\n')
            assert problems_of(path) == [f"targets[0]: cannot read api_key_file '{secret}': not a regular file"]

    def test_a_ca_file_is_loaded_when_the_config_is(self, tmp_path: Path) -> None:
        """A tls_ca_file that is missing, or holds no certificate ssl can load, is a config problem (check-config
        and a reload see it, not the first request); a real CA loads, once for all the targets that share it, also
        with the comments distribution bundles carry (UTF-8 or Latin-1)."""
        ca = make_certs(tmp_path / "certs").ca_cert
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        commented = tmp_path / "commented.pem"
        commented.write_bytes("# Főtanúsítvány\n".encode() + "# F\xf5\n".encode("latin-1") + ca.read_bytes())
        targets = "".join(f'[[targets]]\nname = "t{index}"\nurl = "https://127.0.0.1:1"\ntls_ca_file = "{ca_file}"\n'
                          for index, ca_file in enumerate((tmp_path / "nope.pem", junk, ca, ca, commented)))
        assert problems_of(write(tmp_path, targets)) == [
            f"targets[0]: cannot load tls_ca_file '{tmp_path / 'nope.pem'}': No such file or directory",
            f"targets[1]: cannot load tls_ca_file '{junk}': no PEM certificate ssl can load",
        ]

    def test_a_secret_sent_as_a_header_is_one_line(self, tmp_path: Path) -> None:
        """A bearer token, a header or an API key file of two lines (or holding a control character) is a config
        problem that names the file, never its content: no request could send it."""
        token, headers, key = tmp_path / "token", tmp_path / "headers", tmp_path / "key"
        token.write_text("s3cret-one\ns3cret-two\n")
        headers.write_text("X-Fine: yes\nX-Proxy-Token: s3cret\x01three\n")
        key.write_text("comfyui-s3cret\ncomfyui-s3cret-b\n")
        path = write(tmp_path, f'[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\nbearer_token_file = "{token}"\n'
                               f'[[targets]]\nname = "b"\nurl = "http://127.0.0.1:1"\nheaders_file = "{headers}"\n'
                               f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key_file = "{key}"\n')
        one_line = "holds a line break or another control character (a header value is one line)"
        problems = problems_of(path)
        assert problems == [f"targets[0]: bearer_token_file: {one_line}",
                            f"targets[1]: headers_file: line 2: {one_line}", f"targets[2]: api key: {one_line}"]
        assert "s3cret" not in "".join(problems)

    def test_a_huge_secret_file(self, tmp_path: Path) -> None:
        """A secret file is bounded too: a key file over MAX_SECRET_BYTES is a config problem."""
        key = tmp_path / "key"
        with key.open("wb") as file:
            file.truncate(MAX_SECRET_BYTES + 1)
        path = write(tmp_path, f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key_file = "{key}"\n')
        assert problems_of(path) == [f"targets[0]: cannot read api_key_file '{key}': larger than 64KiB"]
        assert MAX_SECRET_BYTES == 64 * 2**10

    def test_an_unreadable_module_secret(self, tmp_path: Path) -> None:
        """A /probe module's secret files are checked when the config loads, like a target's."""
        missing = tmp_path / "nope"
        path = write(tmp_path, f'[modules.authed]\nbearer_token_file = "{missing}"\n')
        assert problems_of(path) == [
            f"modules.authed: cannot read bearer_token_file '{missing}': No such file or directory"
        ]

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file (tests/e2e drops that capability)")
    def test_permission_denied(self, tmp_path: Path) -> None:
        """A file the daemon may not read is one line with the OS reason."""
        path = write(tmp_path, "")
        path.chmod(0)
        assert problems_of(path) == ["cannot read file: Permission denied"]

    def test_control_characters_in_a_key_are_not_printed(self, tmp_path: Path) -> None:
        """An unknown key is quoted in its problem line, but never as a terminal escape sequence."""
        path = write(tmp_path, '"\\u001b[2J\\u001b[1;31mFAKE" = 1\n')
        (problem,) = problems_of(path)
        assert "\x1b" not in problem and problem.startswith(" [2J [1;31mFAKE: unknown key")

    def test_problem_lines_and_their_number_are_bounded(self, tmp_path: Path) -> None:
        """A file with a thousand problems prints a bounded number of bounded lines and counts the rest."""
        path = write(tmp_path, "".join(f'k{i}{"x" * 1000} = 1\n' for i in range(1000)))
        problems = problems_of(path)
        assert len(problems) == MAX_PROBLEMS + 1
        assert problems[-1] == f"{1000 - MAX_PROBLEMS} more problems not shown"
        assert all(len(p) <= MAX_PROBLEM_CHARS for p in problems)

    def test_suggestions_only_for_the_problems_printed(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The closest-key search (difflib) runs for the lines printed only: for every key of a file of a
        hundred thousand unknown keys it took minutes."""
        calls: list[str] = []
        real = difflib.get_close_matches

        def counting(word: str, *args: Any, **kwargs: Any) -> list[str]:
            calls.append(word)
            return real(word, *args, **kwargs)

        monkeypatch.setattr(difflib, "get_close_matches", counting)
        path = write(tmp_path, "".join(f"k{i} = 1\n" for i in range(1000)))
        assert problems_of(path)[0] == (
            "k0: unknown key (known keys: server, defaults, metrics, status, targets, discovery, modules, probe, "
            "workflows, state_dir)"
        )
        assert len(calls) == MAX_PROBLEMS


class TestHostileEnvironment:
    def test_undecodable_bytes_in_a_value(self) -> None:
        """Python decodes undecodable environment bytes to lone surrogates, which no encoder accepts later."""
        env = {"COMFYWATCH_TARGETS__0__NAME": "a", "COMFYWATCH_TARGETS__0__URL": "http://a",
               "COMFYWATCH_TARGETS__0__LABELS__RACK": "r\udcff1"}
        assert problems_of(None, env) == ["targets[0].labels.rack: not valid UTF-8"]

    def test_a_json_surrogate_escape(self) -> None:
        """JSON's \\ud800 escape is another way to the same lone surrogate, in a key or a value."""
        assert problems_of(None, {"COMFYWATCH_SERVER__LISTEN": '"\\ud800:1"'}) == ["server.listen: not valid UTF-8"]
        env = {"COMFYWATCH_TARGETS__0__NAME": "a", "COMFYWATCH_TARGETS__0__URL": "http://a",
               "COMFYWATCH_TARGETS__0__LABELS": '{"\\ud800": "x"}'}
        assert problems_of(None, env) == ["targets[0].labels: a key is not valid UTF-8"]


# ---------------------------------------------------------------------------------------------------------
# The property: TOML-ish text and arbitrary bytes give a Config or a ConfigError, and nothing else.

KEYS = ["server", "defaults", "targets", "discovery", "modules", "probe", "state_dir", "listen", "max_concurrency",
        "shard", "interval", "timeout", "stall_after", "max_body_size", "name", "url", "kind", "labels", "checks",
        "canary", "verify", "images", "text_matches", "files", "allow", "headers_file", "balance_divisor",
        "refresh_interval", "max_runs_per_day", "workflow", "api_key_file", "web_config_file"]
HOSTILE_VALUES = [
    "9" * (DIGITS + 1), "-" + "9" * (DIGITS + 1), "0x" + "f" * 4000, "0o" + "7" * 5000, "0b" + "1" * 20000,
    "1e999", "-1e999", "nan", "inf", "-0", "0", "1", "-1", "true", '"0s"', '"1ms"', '"366d"', '"24h"', '"1s"',
    '"\\u0000"', '"\\u001b[2J"', '"/dev/zero"', '"/"', '"http://u:p@h:1"', '"10.0.0.0/8"', '"0/100000"',
    "[" * 600 + "]" * 600, "{a = {b = {c = {d = 1}}}}", "[[1, 2], [3]]", '"' + "x" * 5000 + '"', "1979-05-27",
    "1979-02-30", "07:32:00", "[]", "{}",
]
values = st.sampled_from(HOSTILE_VALUES) | st.integers().map(str) | st.text(max_size=20).map(
    lambda t: '"' + t.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"')
keys = st.sampled_from(KEYS) | st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)
headers = st.sampled_from(["[server]", "[defaults]", "[[targets]]", "[targets.canary]", "[targets.canary.verify]",
                           "[discovery]", "[modules.local]", "[modules.x]", "[probe]", "[targets.labels]"])
lines = st.one_of(headers, st.tuples(keys, values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
                  st.text(max_size=40))
toml_ish = st.lists(lines, max_size=12).map("\n".join)
raw_bytes = st.binary(max_size=400) | toml_ish.map(lambda text: text.encode("utf-8", "surrogatepass"))
environment_values = st.sampled_from(HOSTILE_VALUES) | st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=20)
environment = st.dictionaries(
    st.sampled_from(["COMFYWATCH_DEFAULTS__INTERVAL", "COMFYWATCH_SERVER__LISTEN", "COMFYWATCH_TARGETS__0__URL",
                     "COMFYWATCH_TARGETS__0__NAME", "COMFYWATCH_TARGETS__0__LABELS__RACK",
                     "COMFYWATCH_TARGETS__0__LABELS", "COMFYWATCH_PROBE__ALLOW", "COMFYWATCH_SERVER__MAX_CONCURRENCY",
                     "COMFYWATCH_STATE_DIR", "COMFYWATCH_DISCOVERY__FILES", "COMFYWATCH_URL"]),
    environment_values, max_size=4)


def assert_total(path: Path | None, env: dict[str, str]) -> None:
    """load_config gives a Config, or a ConfigError whose lines are printable, single and bounded."""
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        assert 0 < len(exc.problems) <= MAX_PROBLEMS + 1
        for problem in exc.problems:
            problem.encode("utf-8")
            assert "\n" not in problem and len(problem) <= MAX_PROBLEM_CHARS
    else:
        assert isinstance(config, Config)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-loading")


class TestTotal:
    @FUZZ
    @given(toml_ish)
    def test_toml_ish_text(self, workdir: Path, text: str) -> None:
        """Text built from the config's own keys and hostile TOML values loads or fails with ConfigError."""
        path = workdir / "text.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        assert_total(path, {})

    @FUZZ
    @given(raw_bytes)
    def test_bytes(self, workdir: Path, content: bytes) -> None:
        """Any bytes as the config file load or fail with ConfigError."""
        path = workdir / "bytes.toml"
        path.write_bytes(content)
        assert_total(path, {})

    @FUZZ
    @given(toml_ish, environment)
    def test_with_environment(self, workdir: Path, text: str, env: dict[str, str]) -> None:
        """Environment overrides of any text (lone surrogates included) on top of any file: the same."""
        path = workdir / "env.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        assert_total(path, env)

    @pytest.mark.parametrize("value", HOSTILE_VALUES)
    @pytest.mark.parametrize("key", ["max_concurrency", "listen", "interval", "[defaults]\ninterval",
                                     "[[targets]]\nname", "[[targets]]\nname = \"a\"\nurl",
                                     "[[targets]]\nname = \"a\"\nurl = \"http://a\"\nlabels", "[probe]\nallow"])
    def test_every_hostile_value_in_key_places(self, tmp_path: Path, key: str, value: Any) -> None:
        """Each hostile value, at the top level and inside each kind of table, loads or fails with ConfigError."""
        assert_total(write(tmp_path, f"{key} = {value}\n"), {})
