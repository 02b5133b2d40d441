"""``comfywatch simulate``: run a simulated ComfyUI 0.3.64 (or Comfy Cloud) until SIGTERM/SIGINT.

Once listening it prints one JSON line ``{"url": ..., "admin_url": ...}`` to stdout and writes the same JSON
to ``--port-file`` (written atomically, so a reader never sees half a file). ``--help`` lists every fault with
its description from the fault catalogues.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from comfywatch.sim.admin import cloud_faults, start_sim
from comfywatch.sim.faults import DEFAULT_SLOW_MS, FAULT_DESCRIPTIONS

__all__ = ["build_parser", "faults_epilog", "main"]


def _fault_table(descriptions: Mapping[str, str]) -> str:
    width = max(map(len, descriptions)) + 2
    return "\n".join(f"  {name:<{width}}{text}" for name, text in descriptions.items())


def faults_epilog() -> str:
    """The end of ``--help``: every fault name of both simulators with its one-line description."""
    local = {fault.value: text for fault, text in FAULT_DESCRIPTIONS.items()}
    return (
        "faults (--fault NAME at start, or POST /_sim/faults on the admin API at run time):\n"
        f"{_fault_table(local)}\n\n"
        f"faults with --cloud:\n{_fault_table(cloud_faults())}\n\n"
        "The admin API, and which alert each fault should trigger: docs/simulator.md."
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``comfywatch simulate`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="comfywatch simulate",
        description="Run a simulated ComfyUI 0.3.64 server (or Comfy Cloud) with fault injection.",
        epilog=faults_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8188, help="port of the simulated server (0: any free port)")
    parser.add_argument("--admin-port", type=int, default=0, help="port of the admin API (default: any free port)")
    parser.add_argument("--port-file", type=Path, help='write {"url", "admin_url"} as JSON here once listening')
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME",
        help="fault active from the start (repeatable)",
    )
    parser.add_argument("--slow-ms", type=int, default=DEFAULT_SLOW_MS, help="delay of the 'slow' fault in ms")
    parser.add_argument("--targets", type=int, default=0, help="also serve N targets under /t/0 ... /t/N-1")
    parser.add_argument(
        "--load-per-min",
        type=float,
        default=0.0,
        help="background jobs per minute from other users, per target",
    )
    parser.add_argument("--job-ms", type=float, default=1000.0, help="run time of a background job in ms")
    parser.add_argument("--exec-ms", type=float, default=4.0, help="run time of a posted prompt in ms")
    parser.add_argument("--jobs-api", action="store_true", help="also serve the newer /api/jobs endpoints")
    parser.add_argument("--cloud", action="store_true", help="simulate Comfy Cloud instead of a local ComfyUI")
    parser.add_argument(
        "--cloud-api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="API key the simulated Cloud accepts",
    )
    return parser


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


async def _serve(args: argparse.Namespace) -> int:
    handle = await start_sim(
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        faults=args.fault,
        slow_ms=args.slow_ms,
        targets=args.targets,
        load_per_min=args.load_per_min,
        job_ms=args.job_ms,
        exec_ms=args.exec_ms,
        jobs_api=args.jobs_api,
        cloud=args.cloud,
        cloud_api_keys=args.cloud_api_key,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        line = json.dumps({"url": handle.url, "admin_url": handle.admin_url})
        print(line, flush=True)
        if args.port_file is not None:
            _write_atomically(args.port_file, line + "\n")
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await handle.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``comfywatch simulate``; 0 after a clean stop, 2 for bad options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cloud and not args.cloud_api_key:
        parser.error("--cloud needs at least one --cloud-api-key")
    if args.targets < 0 or args.load_per_min < 0 or args.job_ms < 0 or args.exec_ms < 0 or args.slow_ms < 0:
        parser.error("--targets, --load-per-min, --job-ms, --exec-ms and --slow-ms must not be negative")
    try:
        return asyncio.run(_serve(args))
    except ValueError as ex:
        print(f"comfywatch simulate: {ex}", file=sys.stderr)
        return 2
    except OSError as ex:
        print(f"comfywatch simulate: cannot listen: {ex}", file=sys.stderr)
        return 1
    except ImportError as ex:
        print(f"comfywatch simulate: the simulated Cloud is not available: {ex}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
