"""Target discovery from Prometheus ``file_sd`` files (JSON or YAML), re-read on change and on SIGHUP.

Each file holds ``[{"targets": ["host:port" | "http(s)://host:port/prefix", ...], "labels": {...}}, ...]``.
A group's labels become extra labels on that target's series (validated, bounded); the special label
``name`` (if present) names a single-target group, otherwise the name is ``host:port``. Labels starting
with ``__`` are Prometheus-internal and dropped, as Prometheus does.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from comfywatch.config import DiscoveryConfig, TargetConfig, validate_labels

__all__ = ["discovery_fingerprint", "load_discovered", "parse_file_sd"]

MAX_TARGETS_PER_FILE = 10_000


def _files(patterns: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        found.update(glob.glob(os.path.expanduser(pattern)))
    return sorted(found)


def discovery_fingerprint(config: DiscoveryConfig) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of every matched file: a change means "reload"."""
    out = []
    for path in _files(config.files):
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _url(entry: str) -> str:
    if entry.startswith(("http://", "https://")):
        return entry
    return f"http://{entry}"


def _name(entry: str) -> str:
    text = entry.split("://", 1)[-1]
    return text.split("/", 1)[0][:63]


def parse_file_sd(data: Any, source: str, config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
    """Targets and problems (``file.json[2].labels: ...``) from one decoded file; never raises."""
    targets: list[TargetConfig] = []
    problems: list[str] = []
    if not isinstance(data, list):
        return [], [f"{source}: expected a list of target groups"]
    for index, group in enumerate(data):
        where = f"{source}[{index}]"
        if not isinstance(group, dict):
            problems.append(f"{where}: expected an object with 'targets' and 'labels'")
            continue
        entries = group.get("targets")
        raw_labels = group.get("labels") or {}
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            problems.append(f"{where}.targets: expected a list of strings")
            continue
        if not isinstance(raw_labels, dict) or not all(isinstance(v, str) for v in raw_labels.values()):
            problems.append(f"{where}.labels: expected string values")
            continue
        labels = {str(k): v for k, v in raw_labels.items() if not str(k).startswith("__")}
        name_label = labels.pop("name", None)
        try:
            labels = validate_labels(labels)
        except ValueError as exc:
            problems.append(f"{where}.labels: {exc}")
            continue
        for position, entry in enumerate(entries):
            if len(targets) >= MAX_TARGETS_PER_FILE:
                problems.append(f"{source}: more than {MAX_TARGETS_PER_FILE} targets; the rest ignored")
                return targets, problems
            name = name_label if name_label and len(entries) == 1 else _name(entry)
            try:
                targets.append(TargetConfig(name=name, kind=config.kind, url=_url(entry), labels=labels,
                                            canary=config.canary))
            except ValueError as exc:
                first = str(exc).splitlines()
                problems.append(f"{where}.targets[{position}]: {first[-1].strip() if first else 'invalid'}")
    return targets, problems


def load_discovered(config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
    """Every target of every matched file; duplicate names keep the first (sorted by file path)."""
    found: dict[str, TargetConfig] = {}
    problems: list[str] = []
    for path in _files(config.files):
        try:
            text = Path(path).read_text(encoding="utf-8")
            data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read ({type(exc).__name__})")
            continue
        except (ValueError, yaml.YAMLError):
            problems.append(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}")
            continue
        targets, more = parse_file_sd(data, path, config)
        problems.extend(more)
        for target in targets:
            if target.name in found:
                problems.append(f"{path}: duplicate target {target.name!r} ignored")
                continue
            found[target.name] = target
    return list(found.values()), problems
