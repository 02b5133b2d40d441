"""Tests for comfywatch.logs: one redacted stream for structlog and stdlib loggers, journald priorities."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
import structlog

from comfywatch.logs import configure_logging, get_logger, journal_priority_prefix, redact_processor
from comfywatch.redact import register_secret

SECRET = "sk-cw-test-5f1e0a9b77"


@pytest.fixture(autouse=True)
def _isolate_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave the root logger, structlog and context variables as each test found them."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog.contextvars.clear_contextvars()
    register_secret(SECRET)
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[TextIO]:
    """A real file stream (it has a descriptor, an inode and a device, like journald's socket)."""
    with (tmp_path / "out.log").open("w+", encoding="utf-8") as stream:
        yield stream


def read(stream: TextIO) -> str:
    stream.flush()
    with open(stream.name, encoding="utf-8") as f:
        return f.read()


def records(stream: TextIO) -> list[dict[str, Any]]:
    """Every line must be one JSON object."""
    return [json.loads(line) for line in read(stream).splitlines()]


def _fail_with_secret_local() -> None:
    reply = "unregistered-local-5551234"  # innocent name: only show_locals=False keeps it out
    raise RuntimeError(f"upstream refused key {SECRET} (len {len(reply)})")


class TestRedaction:
    def test_secret_in_event_field(self, log_file: TextIO) -> None:
        """A registered secret passed in a field is masked."""
        configure_logging(stream=log_file)
        get_logger("comfywatch.t").info("probe", detail=f"sent {SECRET} upstream")
        out = read(log_file)
        assert SECRET not in out
        assert records(log_file)[0]["detail"] == "sent *** upstream"

    def test_secret_in_exception_message_and_no_locals(self, log_file: TextIO) -> None:
        """Exception text is scrubbed and local variables are never rendered."""
        configure_logging(stream=log_file)
        try:
            _fail_with_secret_local()
        except RuntimeError:
            get_logger("comfywatch.t").exception("check crashed")
        out = read(log_file)
        assert SECRET not in out
        assert "unregistered-local-5551234" not in out
        (record,) = records(log_file)
        assert record["exception"][0]["exc_type"] == "RuntimeError"
        assert record["exception"][0]["exc_value"].startswith("upstream refused key ***")

    def test_stdlib_logger_message_and_exception(self, log_file: TextIO) -> None:
        """A library's stdlib log line (message args and traceback) lands in the same stream, scrubbed."""
        configure_logging(stream=log_file)
        logging.getLogger("aiohttp.access").info("GET /ws?clientId=1&token=%s", SECRET)
        try:
            _fail_with_secret_local()
        except RuntimeError:
            logging.getLogger("apscheduler.executors.default").exception("Job %r raised", SECRET)
        out = read(log_file)
        assert SECRET not in out
        access, job = records(log_file)
        assert access["logger"] == "aiohttp.access"
        assert access["event"] == "GET /ws?clientId=1&token=***"
        assert job["logger"] == "apscheduler.executors.default"
        assert job["level"] == "error"
        assert job["exception"][0]["exc_value"].startswith("upstream refused key ***")

    def test_password_inside_a_url_even_unregistered(self, log_file: TextIO) -> None:
        """URL userinfo is masked even when its password was never registered."""
        configure_logging(stream=log_file)
        get_logger("comfywatch.t").warning("target down", url="http://admin:not-registered-pw@gpu1:8188/x")
        assert "not-registered-pw" not in read(log_file)
        assert records(log_file)[0]["url"] == "http://***@gpu1:8188/x"

    def test_secret_named_keys_and_nested_values(self, log_file: TextIO) -> None:
        """api_key/token/headers-like keys are masked whole, at any depth; other values are scrubbed."""
        configure_logging(stream=log_file)
        get_logger("comfywatch.t").info(
            "request",
            api_key="whatever-1",
            headers={"X-Custom": "whatever-2"},
            target={"name": "cloud", "auth": {"access_token": "whatever-3"}, "notes": [SECRET.encode()]},
        )
        out = read(log_file)
        for leaked in ("whatever-1", "whatever-2", "whatever-3", SECRET):
            assert leaked not in out
        (record,) = records(log_file)
        assert record["api_key"] == "***"
        assert record["headers"] == "***"
        assert record["target"] == {"name": "cloud", "auth": {"access_token": "***"}, "notes": ["***"]}

    def test_arbitrary_objects_are_stringified_then_scrubbed(self, log_file: TextIO) -> None:
        """An object whose str() holds a secret is rendered scrubbed, never through repr()."""

        class Endpoint:
            def __str__(self) -> str:
                return f"Endpoint(key={SECRET})"

        configure_logging(stream=log_file)
        get_logger("comfywatch.t").info("using", endpoint=Endpoint())
        assert records(log_file)[0]["endpoint"] == "Endpoint(key=***)"

    def test_console_format_is_scrubbed_too(self, log_file: TextIO) -> None:
        """Console output (the CLI) is redacted, tracebacks included, and has no colours off a TTY."""
        configure_logging(fmt="console", stream=log_file)
        try:
            _fail_with_secret_local()
        except RuntimeError:
            get_logger("comfywatch.t").exception("doctor failed", key=SECRET)
        out = read(log_file)
        assert SECRET not in out
        assert "unregistered-local-5551234" not in out
        assert "Traceback (most recent call last)" in out
        assert "\x1b[" not in out

    def test_redact_processor_is_pure(self) -> None:
        """The processor returns a new scrubbed dict and leaves numbers, booleans and None alone."""
        event = {
            "event": f"x {SECRET}",
            "n": 3,
            "ok": True,
            "none": None,
            "password": "p",
            "l": (SECRET, 1.5),
        }
        assert redact_processor(None, "info", event) == {
            "event": "x ***",
            "n": 3,
            "ok": True,
            "none": None,
            "password": "***",
            "l": ["***", 1.5],
        }
        assert event["event"] == f"x {SECRET}"


class TestShape:
    def test_json_lines_fields(self, log_file: TextIO) -> None:
        """Each line is JSON with event, level, logger, a UTC ISO timestamp and bound context."""
        configure_logging(stream=log_file)
        structlog.contextvars.bind_contextvars(target="studio-gpu-1")
        get_logger("comfywatch.daemon").info("started", targets=2)
        (record,) = records(log_file)
        assert record["event"] == "started"
        assert record["level"] == "info"
        assert record["logger"] == "comfywatch.daemon"
        assert record["target"] == "studio-gpu-1"
        assert record["targets"] == 2
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", record["timestamp"])

    def test_level_filters_both_worlds(self, log_file: TextIO) -> None:
        """level='warning' drops info from structlog and stdlib loggers alike."""
        configure_logging(stream=log_file, level="WARNING")
        get_logger("comfywatch.t").info("quiet")
        logging.getLogger("websockets.client").info("quiet too")
        get_logger("comfywatch.t").warning("loud")
        assert [r["event"] for r in records(log_file)] == ["loud"]

    def test_reconfigure_replaces_the_handler(self, tmp_path: Path, log_file: TextIO) -> None:
        """A second configure_logging() sends output to the new stream only."""
        configure_logging(stream=log_file)
        with (tmp_path / "second.log").open("w+", encoding="utf-8") as second:
            configure_logging(stream=second)
            get_logger("comfywatch.t").info("after")
            assert [r["event"] for r in records(second)] == ["after"]
        assert read(log_file) == ""

    @pytest.mark.parametrize(
        ("kwargs", "message"), [({"level": "loud"}, "log level"), ({"fmt": "xml"}, "format")]
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], message: str) -> None:
        """Unknown levels and formats are a ValueError naming the problem."""
        with pytest.raises(ValueError, match=message):
            configure_logging(**kwargs)


class TestJournald:
    def test_prefix_when_journal_stream_matches(
        self, log_file: TextIO, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With JOURNAL_STREAM = the stream's st_dev:st_ino, lines carry <7>/<6>/<4>/<3> before the JSON."""
        st = os.fstat(log_file.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging(stream=log_file, level="debug")
        log = get_logger("comfywatch.t")
        log.debug("d")
        log.info("i")
        log.warning("w")
        logging.getLogger("aiohttp.server").error("e")
        lines = read(log_file).splitlines()
        assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
        assert [json.loads(line[3:])["event"] for line in lines] == ["d", "i", "w", "e"]

    def test_no_prefix_when_stream_is_elsewhere(
        self, tmp_path: Path, log_file: TextIO, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """JOURNAL_STREAM naming another file (stdout was redirected) leaves plain JSON lines."""
        other = tmp_path / "journal-socket-stand-in"
        other.touch()
        st = os.stat(other)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging(stream=log_file)
        get_logger("comfywatch.t").error("e")
        assert read(log_file).startswith("{")

    def test_pipe_and_descriptorless_streams(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A pipe matches only its own identity; a StringIO never matches."""
        r, w = os.pipe()
        with os.fdopen(r, "r") as reader, os.fdopen(w, "w") as writer:
            st = os.fstat(writer.fileno())
            env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
            assert journal_priority_prefix(writer, env)
            assert journal_priority_prefix(reader, env)  # both ends are the same pipe inode
            assert not journal_priority_prefix(writer, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
            assert not journal_priority_prefix(writer, {})
        assert not journal_priority_prefix(io.StringIO(), env)
