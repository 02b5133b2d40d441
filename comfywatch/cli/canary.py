"""``comfywatch canary``: run one canary now and print the phase table (exit 0 success, 1 failure)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from comfywatch.checks.canary import CanaryResult, CanaryRunner
from comfywatch.checks.context import build_context, ssl_context_for
from comfywatch.cli.render import format_phases, json_document, printable
from comfywatch.config import Config, ConfigError, TargetConfig, config_file, load_config, target_from_url_option
from comfywatch.logs import configure_logging
from comfywatch.workflows import WorkflowError, load_workflow

__all__ = ["canary_main", "pick_target"]


def pick_target(config: Config, name: str | None) -> TargetConfig:
    """The config's target called *name*, or its first target."""
    candidates = [t for t in config.targets if name is None or t.name == name]
    if not candidates:
        raise ConfigError([f"no target named {name!r}"], "command line")
    return candidates[0]


async def _run(target: TargetConfig, config: Config, workflow_spec: str | None, timeout: float) -> CanaryResult:
    spec = workflow_spec or target.canary.workflow
    name = target.canary.canary_name if workflow_spec is None else (
        spec.removeprefix("builtin:") if spec.startswith("builtin:") else Path(spec).stem)
    workflow = load_workflow(spec, name, target.canary.verify)
    runtime = build_context(config, target)
    assert runtime.local is not None
    runner = CanaryRunner(runtime.local, workflow, timeout=timeout, when_busy="queue",
                          ssl_context=ssl_context_for(target))
    try:
        return await runner.run()
    finally:
        await runtime.close()


def canary_main(args: argparse.Namespace) -> int:
    """Run one canary as the command line asked; returns the exit code (0 ok, 1 failed, 2 usage).

    Raises:
        ConfigError: the config, ``--url`` or ``--target`` is unusable (the caller prints it and exits 2).
    """
    # stdout carries the phase table or the JSON document: log lines (the per-node validation summary, a
    # broken WebSocket) go to stderr, and the debug chatter of a successful run not at all.
    configure_logging(fmt="console", level="warning", stream=sys.stderr)
    config = load_config(config_file(args.config))
    target = target_from_url_option(args.url) if args.url else pick_target(config, args.target)
    if target.kind != "local":
        print("comfywatch canary: Cloud canaries cost credits; run them through the daemon's budget",
              file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_run(target, config, args.workflow, args.timeout))
    except WorkflowError as exc:
        print(printable(f"comfywatch canary: {exc}"), file=sys.stderr)
        return 2
    print(json_document(result.as_dict()) if args.json else format_phases(result, target.public_url))
    return 0 if result.ok else 1
