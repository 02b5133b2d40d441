"""``comfywatch diff A B``: what one ComfyUI server offers that the other lacks.

Each side is a target name of the config or a URL. Both catalogues are read as the daemon's ``catalog`` check
reads them (``/object_info``, ``/models`` and each folder, ``/system_stats`` for the versions) and compared by
:func:`comfywatch.parse.catalog.diff`: custom node packs, node classes, combo options, models per folder,
versions. Exit 0 when they offer the same, 1 when they differ or one cannot be read, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from comfywatch.checks import catalog as catalog_check
from comfywatch.checks import system as system_check
from comfywatch.checks.context import build_context
from comfywatch.cli.render import printable
from comfywatch.clients.http import RequestFailed
from comfywatch.config import (
    Config,
    ConfigError,
    TargetConfig,
    config_file,
    load_config,
    resolve_credentials,
    target_from_url_option,
)
from comfywatch.errors import Failure
from comfywatch.logs import configure_logging
from comfywatch.parse.catalog import Catalog, diff, render_diff

__all__ = ["diff_main"]


class _Unreadable(Exception):
    def __init__(self, name: str, failure: Failure) -> None:
        super().__init__(name)
        self.name = name
        self.failure = failure


def _side(spec: str, config: Config) -> TargetConfig:
    if "://" in spec:
        return target_from_url_option(spec)
    for target in config.targets:
        if target.name == spec:
            if target.kind != "local":
                raise ConfigError([f"{spec!r} is a Comfy Cloud target: diff compares ComfyUI servers"], "command line")
            return target
    raise ConfigError([f"no target named {spec!r} (give a target of --config, or a URL)"], "command line")


def _label(spec: str, target: TargetConfig) -> str:
    return target.public_url if "://" in spec else target.name


async def _catalog(config: Config, target: TargetConfig, label: str, timeout: float) -> Catalog:
    context = build_context(config, target.model_copy(update={"timeout": timeout}))
    try:
        stats = (await system_check.observe(context)).stats
        return (await catalog_check.observe(context, stats)).catalog
    except RequestFailed as failed:
        raise _Unreadable(label, failed.failure) from None
    finally:
        await context.close()


async def _both(config: Config, sides: list[tuple[TargetConfig, str]], timeout: float) -> list[Catalog]:
    return list(await asyncio.gather(*(_catalog(config, target, label, timeout) for target, label in sides)))


def diff_main(args: argparse.Namespace) -> int:
    """Print what A and B offer differently; the exit code (see the module docstring).

    Raises:
        ConfigError: the config, a target name or a URL is unusable (the caller prints it and exits 2).
    """
    configure_logging(fmt="console", level="error", stream=sys.stderr)
    path = config_file(args.config)
    config = load_config(path)
    sides = [(target, _label(spec, target)) for spec in (args.a, args.b) for target in [_side(spec, config)]]
    try:
        for target, _ in sides:
            resolve_credentials(target)
    except ValueError as exc:
        print(printable(f"comfywatch diff: {str(exc).splitlines()[0]}"), file=sys.stderr)
        return 2
    try:
        catalog_a, catalog_b = asyncio.run(_both(config, sides, args.timeout))
    except _Unreadable as unreadable:
        failure = unreadable.failure
        print(printable(f"comfywatch diff: cannot read the catalogue of {unreadable.name}: {failure.reason}: "
                        f"{failure.detail}"), file=sys.stderr)
        print(printable(f"  fix: {failure.hint}"), file=sys.stderr)
        return 1
    (_, name_a), (_, name_b) = sides
    found = diff(catalog_a, catalog_b)
    for line in render_diff(found, name_a, name_b):
        print(printable(line))
    if found.empty:
        print(f"{catalog_a.node_classes} node classes, {sum(catalog_a.model_counts.values())} model files; "
              f"nodes_hash {catalog_a.nodes_hash}, models_hash {catalog_a.models_hash}")
    return 0 if found.empty else 1
