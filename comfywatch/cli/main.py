"""Command line: ``comfywatch run | doctor | canary | diff | simulate | check-config | version``.

``main(argv) -> int`` never raises for user errors: exit 0 = fine, 1 = problems found / failure,
2 = usage or configuration error (the same convention for every subcommand).

Each subcommand imports its modules when it runs: importing the daemon takes ~1.3 s of a 2-core machine
(aiohttp, APScheduler, pydantic, cryptography's loader), ``comfywatch version`` and ``--help`` ~0.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from comfywatch import __version__

if TYPE_CHECKING:
    from comfywatch.config import ConfigError

__all__ = ["build_parser", "main"]

#: How many target names ``check-config`` lists before it only counts the rest.
_NAMES_SHOWN = 10

_DOCTOR_EXIT_CODES = """\
exit codes:
  0  nothing failed (warnings alone do not fail)
  1  at least one check failed, or a warning was raised with --strict
  2  usage or configuration error: an invalid config, an unknown --target, a
     malformed --url, an unreadable --workflow or a missing credential file
     (printed on stderr, with no report)"""


_DIFF_EXIT_CODES = """\
exit codes:
  0  A and B offer the same catalogue
  1  they differ, or one cannot be read (stderr says why)
  2  usage or configuration error: an unknown target, a malformed URL"""


def _timeout_seconds(value: str) -> float:
    """``--timeout``: a number of seconds in (0, 3600]."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {value!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    """The ``comfywatch`` argument parser (``simulate`` only names its subcommand: it parses its own options)."""
    parser = argparse.ArgumentParser(
        prog="comfywatch", description="Monitoring and diagnostics for ComfyUI and Comfy Cloud."
    )
    parser.add_argument("--version", action="version", version=f"comfywatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do (default: run)")

    run = sub.add_parser("run", help="run the daemon (scheduler + Prometheus exporter)")
    run.add_argument("--config", "-c", metavar="FILE",
                     help="TOML config file (default: $COMFYWATCH_CONFIG, else built-in)")
    run.add_argument("--listen", metavar="HOST:PORT", help="override [server] listen, e.g. 127.0.0.1:9877")
    run.add_argument("--shard", metavar="I/N", help="own only shard I of N of the targets")
    run.add_argument("--log-format", choices=("json", "console"), default=os.environ.get("COMFYWATCH_LOG_FORMAT"),
                     help="json (one object per line, on stdout) or console (readable lines, on stderr); "
                          "default: $COMFYWATCH_LOG_FORMAT, else console on a terminal and json otherwise")
    run.add_argument("--log-level", metavar="LEVEL", default=os.environ.get("COMFYWATCH_LOG_LEVEL", "info"),
                     help="debug, info, warning, error or critical (default: $COMFYWATCH_LOG_LEVEL, else info)")
    run.add_argument("--ready-file", help=argparse.SUPPRESS)

    check = sub.add_parser("check-config", help="validate a config file and exit (2 when invalid)")
    check.add_argument("config", nargs="?", metavar="FILE", help="TOML file (default: $COMFYWATCH_CONFIG)")

    doctor = sub.add_parser("doctor", help="check a ComfyUI / Comfy Cloud set-up once and say how to fix it",
                            epilog=_DOCTOR_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = doctor.add_mutually_exclusive_group()
    source.add_argument("--config", "-c", metavar="FILE",
                        help="check every target of this TOML file (default: $COMFYWATCH_CONFIG, else "
                             "http://127.0.0.1:8188)")
    source.add_argument("--url", metavar="URL", help="ComfyUI URL (userinfo allowed: http://user:pass@host:8188)")
    doctor.add_argument("--cloud", action="store_true",
                        help="check Comfy Cloud (key from COMFYWATCH_CLOUD_API_KEY or the credential; "
                             "--url overrides https://cloud.comfy.org)")
    doctor.add_argument("--target", metavar="NAME", help="only this target of the config")
    doctor.add_argument("--workflow", metavar="PATH",
                        help="lint this API-format workflow (or each *.json workflow in this directory) against the "
                             "server")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--no-canary", action="store_true", help="skip the canary run")
    doctor.add_argument("--strict", action="store_true", help="warnings fail too")
    doctor.add_argument("--timeout", type=_timeout_seconds, default=10.0, metavar="SECONDS",
                        help="how long each step (DNS, TCP, TLS, each request) may take (default: 10)")

    canary = sub.add_parser("canary", help="run one canary now and print its phases")
    csource = canary.add_mutually_exclusive_group()
    csource.add_argument("--config", "-c", metavar="FILE",
                         help="TOML config file (default: $COMFYWATCH_CONFIG, else built-in)")
    csource.add_argument("--url", metavar="URL", help="run it on this ComfyUI instead of a target of the config "
                                                      "(userinfo allowed: http://user:pass@host:8188)")
    canary.add_argument("--target", metavar="NAME", help="this target of the config (default: the first)")
    canary.add_argument("--workflow", metavar="FILE",
                        help="API-format workflow file, or builtin:preview-image / builtin:echo-text")
    canary.add_argument("--timeout", type=_timeout_seconds, default=120.0, metavar="SECONDS",
                        help="how long the whole run may take (default: 120)")
    canary.add_argument("--json", action="store_true", help="print the result as JSON instead of the phase table")

    compare = sub.add_parser("diff", help="what one ComfyUI server offers that another lacks (nodes, models, "
                                          "versions)", epilog=_DIFF_EXIT_CODES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("a", metavar="A", help="a target name of the config, or a URL")
    compare.add_argument("b", metavar="B", help="a target name of the config, or a URL")
    compare.add_argument("--config", "-c", metavar="FILE",
                         help="TOML config file naming the targets (default: $COMFYWATCH_CONFIG)")
    compare.add_argument("--timeout", type=_timeout_seconds, default=30.0, metavar="SECONDS",
                         help="how long each request may take (default: 30; /object_info is large)")

    simulate = sub.add_parser("simulate", help="run a simulated ComfyUI (or Comfy Cloud) server", add_help=False)
    simulate.add_argument("args", nargs=argparse.REMAINDER)

    sub.add_parser("version", help="print the version")
    return parser


def _report(exc: ConfigError) -> int:
    """Every problem on its own ``source: problem`` line on stderr; the exit code of a configuration error."""
    # imported when a command fails (start-up cost, see the module docstring)
    from comfywatch.cli.render import printable

    for problem in exc.problems:
        print(printable(f"{exc.source}: {problem}"), file=sys.stderr)
    return 2


def _check_config(path_arg: str | None) -> int:
    # imported when the subcommand runs (start-up cost, see the module docstring)
    from comfywatch.cli.render import printable
    from comfywatch.config import config_file, load_config
    from comfywatch.server.webconfig import WebConfigError, load_web_config

    path = config_file(path_arg)
    config = load_config(path)
    if config.server.web_config_file is not None:
        # Read as run reads it: a web config that run would refuse is no valid configuration either.
        try:
            load_web_config(config.server.web_config_file)
        except WebConfigError as exc:  # its message names the file and the key
            print(printable(str(exc)), file=sys.stderr)
            return 2
    names = [t.name for t in config.targets]
    shown = ", ".join(names[:_NAMES_SHOWN]) + (f" and {len(names) - _NAMES_SHOWN} more"
                                                if len(names) > _NAMES_SHOWN else "")
    count = f"{len(names)} target{'' if len(names) == 1 else 's'}" + (f": {shown}" if names else "")
    # The file's name is the operator's, its bytes perhaps not UTF-8 (surrogates) or a terminal's escapes.
    print(printable(f"{path or 'built-in defaults'}: OK ({count}; listen {config.server.listen})"))
    return 0


def _run(args: argparse.Namespace) -> int:
    # imported when the subcommand runs, and before the daemon's modules (see the pin below)
    from comfywatch.daemon import malloc

    # Before the daemon's imports and its configuration free their large blocks: glibc raises its heap trim
    # threshold with the mmap threshold at each, and the pin leaves the trim threshold as it is. And before any
    # thread allocates, as a thread keeps the arena it was given. Here, not in Daemon: the allocator is the whole
    # process's, and a daemon embedded in tests leaves the test process's alone.
    pinned = malloc.pin_mmap_threshold()
    capped = malloc.cap_arenas()
    # imported when the subcommand runs (start-up cost, see the module docstring)
    from comfywatch.cli.render import printable
    from comfywatch.config import ConfigError, config_file
    from comfywatch.daemon.service import Daemon, ListenError
    from comfywatch.logs import configure_logging, default_log_format
    from comfywatch.server.webconfig import WebConfigError

    daemon = Daemon(config_file(args.config), listen=args.listen, shard=args.shard, mmap_threshold_pinned=pinned,
                    arenas_capped=capped)
    # Problems with the file or the options are reported like check-config's, before anything starts.
    config = daemon.load()
    try:
        configure_logging(fmt=args.log_format or default_log_format(), level=args.log_level)
    except ValueError as exc:  # a bad level, or a bad format from $COMFYWATCH_LOG_FORMAT
        raise ConfigError([str(exc)], "command line") from None
    # APScheduler logs every job run at INFO and every skipped overlapping run at WARNING: with 1000 targets, or
    # one hanging target, that drowns the journal. Overlaps are counted in comfywatch_check_overruns_total.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    ready = Path(args.ready_file) if args.ready_file else None
    try:
        return asyncio.run(daemon.run(config=config, ready_file=ready))
    except ListenError as exc:
        print(printable(str(exc)), file=sys.stderr)
        return 1
    except WebConfigError as exc:  # its message names the file and the key, like check-config's lines
        print(printable(str(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command = args.command or "run"
    if command == "version":
        print(f"comfywatch {__version__}")
        return 0
    if command == "check-config":
        return _check_config(args.config)
    if command == "run":
        return _run(args if args.command else parser.parse_args(["run"]))
    if command == "doctor":
        # imported when the subcommand runs (start-up cost, see the module docstring)
        from comfywatch.cli.doctor import doctor_main

        return int(doctor_main(args))
    if command == "canary":
        # imported when the subcommand runs (start-up cost, see the module docstring)
        from comfywatch.cli.canary import canary_main

        return canary_main(args)
    if command == "diff":
        # imported when the subcommand runs (start-up cost, see the module docstring)
        from comfywatch.cli.diff import diff_main

        return diff_main(args)
    parser.print_usage(sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        # imported when the subcommand runs (start-up cost, see the module docstring)
        from comfywatch.sim.cli import main as simulate_main

        return int(simulate_main(argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    # imported when the subcommand runs (start-up cost, see the module docstring)
    from comfywatch.config import ConfigError

    try:
        return _dispatch(parser, args)
    except ConfigError as exc:
        return _report(exc)
