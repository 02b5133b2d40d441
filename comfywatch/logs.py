"""Logging setup: structlog over stdlib logging, JSON or console, with secrets scrubbed from every line.

Everything (comfywatch's structlog loggers and the stdlib loggers of aiohttp, apscheduler, websockets,
httpx) goes through one stdlib handler whose :class:`structlog.stdlib.ProcessorFormatter` renders the
line, so every line of the process is shaped and redacted the same way.

Redaction happens once, in the formatter, *after* exceptions are turned into data: exception messages
and tracebacks are scrubbed like any other field, and locals are never rendered (structlog's
``dict_tracebacks`` shows locals by default, which would dump API keys).

Under systemd, when ``$JOURNAL_STREAM`` says the output stream *is* the journal, each line starts with a
syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) that journald strips and
stores, so ``journalctl -p warning`` works; piped or redirected output stays plain JSON.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from comfywatch.redact import MASK, scrub

__all__ = ["configure_logging", "default_log_format", "get_logger", "journal_priority_prefix", "redact_processor"]

LogFormat = Literal["json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Keys whose values are masked whole, whatever they hold: names people use for credentials.
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "token",
        "access_token",
        "refresh_token",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "headers",
        "credentials",
    }
)
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_token", "_password", "_secret")
_KEY_NORMALISE = re.compile(r"[^a-z0-9]+")

# Marks the handler this module installs, so a second configure_logging() replaces it and leaves other
# handlers (pytest's capture, a user's) alone.
_HANDLER_MARK = "_comfywatch_handler"


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = _KEY_NORMALISE.sub("_", key.lower()).strip("_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def _redact(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str) else scrub(str(k))): (MASK if _is_secret_key(k) else _redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    # Anything else would be rendered through repr()/str() by the renderer, unscrubbed: do it here.
    return scrub(str(value))


def redact_processor(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: scrub every string (recursively) and mask secret-named keys with ``***``.

    Strings go through :func:`comfywatch.redact.scrub` (registered secrets, URL userinfo, auth headers,
    ``token=`` parameters); values of keys such as ``api_key``, ``token``, ``password``,
    ``authorization`` or ``headers`` are replaced whole. Objects that are not JSON scalars, mappings or
    sequences are converted with ``str()`` and scrubbed, so no renderer ever calls their ``repr``.
    """
    return {k: (MASK if _is_secret_key(k) else _redact(v)) for k, v in event_dict.items()}


def journal_priority_prefix(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is connected to the journal, per ``$JOURNAL_STREAM`` (``st_dev:st_ino``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False  # StringIO and friends have no descriptor: not the journal
    return value == f"{st.st_dev}:{st.st_ino}"


class _JournalFormatter(structlog.stdlib.ProcessorFormatter):
    """Prefixes the rendered line with ``<N>``, the syslog priority journald reads and removes."""

    @staticmethod
    def _priority(levelno: int) -> int:
        if levelno >= logging.CRITICAL:
            return 2
        if levelno >= logging.ERROR:
            return 3
        if levelno >= logging.WARNING:
            return 4
        if levelno >= logging.INFO:
            return 6
        return 7

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._priority(record.levelno)}>{super().format(record)}"


def default_log_format() -> LogFormat:
    """``console`` when a person watches the output (stdout and stderr both terminals), else ``json``.

    JSON goes to stdout and console lines to stderr, so systemd's journal, ``| jq`` and ``> file`` all keep
    JSON, and so does a terminal whose stderr is redirected.
    """
    return "console" if _isatty(sys.stdout) and _isatty(sys.stderr) else "json"


def configure_logging(*, fmt: LogFormat = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` as redacted JSON lines or console text.

    Args:
        fmt: ``"json"`` (one object per line, for the daemon and journald) or ``"console"`` (human
            readable; colours only when ``stream`` is a terminal).
        level: minimum level name (debug, info, warning, error, critical), case-insensitive.
        stream: where lines go; default stdout for JSON (the daemon) and stderr for console (the CLI,
            whose stdout carries reports).

    Calling it again replaces the previous setup.

    Raises:
        ValueError: unknown ``fmt`` or ``level``.
    """
    levelno = _LEVELS.get(level.lower())
    if levelno is None:
        raise ValueError(f"unknown log level {level!r}; use one of debug, info, warning, error, critical")
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; use json or console")
    if stream is None:
        stream = sys.stdout if fmt == "json" else sys.stderr

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt == "json":
        final += [
            ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_processor,
            structlog.processors.JSONRenderer(),
        ]
    else:
        # The traceback must be text before redaction; ConsoleRenderer then prints it as given.
        final += [
            structlog.processors.format_exc_info,
            redact_processor,
            structlog.dev.ConsoleRenderer(colors=_isatty(stream)),
        ]

    formatter_class = (
        _JournalFormatter if journal_priority_prefix(stream) else structlog.stdlib.ProcessorFormatter
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_class(foreign_pre_chain=shared, processors=final))
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (use ``__name__``), rendered by :func:`configure_logging`."""
    return structlog.stdlib.get_logger(name)
