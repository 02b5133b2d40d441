"""Command line: ``comfywatch run | doctor | canary | simulate | check-config | version``.

``main(argv) -> int`` never raises for user errors: exit 0 = fine, 1 = problems found / failure,
2 = usage or configuration error (the same convention for every subcommand).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Literal

from comfywatch import __version__

__all__ = ["main"]


def _config_path(value: str | None) -> Path | None:
    if value:
        return Path(value)
    env = os.environ.get("COMFYWATCH_CONFIG")
    return Path(env) if env else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfywatch", description="Monitoring and diagnostics for ComfyUI and Comfy Cloud."
    )
    parser.add_argument("--version", action="version", version=f"comfywatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (scheduler + Prometheus exporter)")
    run.add_argument("--config", "-c", help="TOML config file (default: $COMFYWATCH_CONFIG, else built-in)")
    run.add_argument("--listen", help="override [server] listen, e.g. 127.0.0.1:9877")
    run.add_argument("--shard", help='own only this shard of the targets, "i/N"')
    run.add_argument("--log-format", choices=("json", "console"), default=os.environ.get("COMFYWATCH_LOG_FORMAT"))
    run.add_argument("--log-level", default=os.environ.get("COMFYWATCH_LOG_LEVEL", "info"))
    run.add_argument("--ready-file", help=argparse.SUPPRESS)

    check = sub.add_parser("check-config", help="validate a config file and exit (2 when invalid)")
    check.add_argument("config", nargs="?", help="TOML file (default: $COMFYWATCH_CONFIG)")

    doctor = sub.add_parser("doctor", help="check a ComfyUI / Comfy Cloud set-up once and say how to fix it")
    source = doctor.add_mutually_exclusive_group()
    source.add_argument("--config", "-c")
    source.add_argument("--url", help="ComfyUI URL (userinfo allowed: http://user:pass@host:8188)")
    doctor.add_argument("--cloud", action="store_true",
                        help="check Comfy Cloud (key from COMFYWATCH_CLOUD_API_KEY or the credential; "
                             "--url overrides https://cloud.comfy.org)")
    doctor.add_argument("--target", help="only this target of the config")
    doctor.add_argument("--workflow", help="lint this API-format workflow against the server")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--no-canary", action="store_true", help="skip the canary run")
    doctor.add_argument("--strict", action="store_true", help="warnings fail too")
    doctor.add_argument("--timeout", type=float, default=10.0)

    canary = sub.add_parser("canary", help="run one canary now and print its phases")
    csource = canary.add_mutually_exclusive_group()
    csource.add_argument("--config", "-c")
    csource.add_argument("--url")
    canary.add_argument("--target")
    canary.add_argument("--workflow", help="API-format workflow file, or builtin:preview-image / builtin:echo-text")
    canary.add_argument("--timeout", type=float, default=120.0)
    canary.add_argument("--json", action="store_true")

    simulate = sub.add_parser("simulate", help="run a simulated ComfyUI (or Comfy Cloud) server", add_help=False)
    simulate.add_argument("args", nargs=argparse.REMAINDER)

    sub.add_parser("version", help="print the version")
    return parser


def _check_config(path_arg: str | None) -> int:
    from comfywatch.config import ConfigError, load_config

    path = _config_path(path_arg)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 2
    kinds = {t.kind for t in config.targets}
    print(f"{path or 'built-in defaults'}: OK ({len(config.targets)} targets: {', '.join(sorted(kinds)) or '-'}; "
          f"listen {config.server.listen})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from comfywatch.daemon import Daemon
    from comfywatch.logs import configure_logging

    fmt: Literal["json", "console"] = "console" if args.log_format == "console" else "json"
    if args.log_format is None and sys.stdout.isatty():
        fmt = "console"
    configure_logging(fmt=fmt, level=args.log_level)
    # APScheduler logs every job run at INFO and every skipped overlapping run at WARNING: with 1000 targets, or
    # one hanging target, that drowns the journal. Overlaps are counted in comfywatch_check_overruns_total.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    daemon = Daemon(_config_path(args.config), listen=args.listen, shard=args.shard)
    ready = Path(args.ready_file) if args.ready_file else None
    try:
        return asyncio.run(daemon.run(ready_file=ready))
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        from comfywatch.sim.cli import main as simulate_main

        return int(simulate_main(argv[1:]))
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    command = args.command or "run"
    if command == "run" and args.command is None:
        args = parser.parse_args(["run"])
    if command == "version":
        print(f"comfywatch {__version__}")
        return 0
    if command == "check-config":
        return _check_config(args.config)
    if command == "run":
        return _run(args)
    if command == "doctor":
        from comfywatch.doctor import doctor_main

        return int(doctor_main(args))
    if command == "canary":
        from comfywatch.canary_cli import canary_main

        return canary_main(args)
    parser.print_usage(sys.stderr)
    return 2
