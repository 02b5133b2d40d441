"""Target discovery from Prometheus ``file_sd`` files (JSON or YAML), re-read on change and on SIGHUP.

Each file holds ``[{"targets": ["host:port" | "http(s)://host:port/prefix", ...], "labels": {...}}, ...]``.
A group's labels become extra labels on that target's series (validated, bounded); the special label
``name`` (if present) names a single-target group, otherwise the name is ``host:port`` (plus the URL path
with ``/`` turned into ``_``, so that ``/t/0`` and ``/t/1`` behind one proxy stay two targets). Labels
starting with ``__`` are Prometheus-internal and dropped, as Prometheus does, except ``__scheme__``, which
gives the scheme of entries written without one.

Like Prometheus, a file that cannot be read or decoded keeps the targets of its last good read (a file
caught half-written must not drop, and then re-create with empty state, every target it lists); a file
that is deleted removes its targets.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from comfywatch.config import (
    DiscoveryConfig,
    TargetConfig,
    is_valid_name,
    read_bounded_text,
    strip_secrets_from_url,
    validate_labels,
)
from comfywatch.parse.text import MAX_CHARS, sanitize

__all__ = ["MAX_FILE_SD_BYTES", "discovery_fingerprint", "load_discovered", "parse_file_sd"]

MAX_TARGETS_PER_FILE = 10_000
#: Largest file_sd file read: MAX_TARGETS_PER_FILE targets with a few labels each take about 2 MB of JSON.
MAX_FILE_SD_BYTES = 4 * 2**20
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")

#: Decoded content of each file's last successful read, by path: served again while the file is broken.
_last_good: dict[str, Any] = {}


# libyaml's safe loader when PyYAML was built with it: the pure-Python one takes seconds for a large file.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _files(patterns: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        found.update(glob.glob(os.path.expanduser(pattern)))
    return sorted(found)


def discovery_fingerprint(config: DiscoveryConfig) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, content digest) of every matched file: a change means "reload".

    The digest (not just the size) catches a same-size rewrite within one mtime tick, such as a label
    value changed from ``a`` to ``b`` by a generator that rewrites the file right after creating it. A file
    that cannot be read (too large, not UTF-8) has no digest: its mtime still tells when it changes.
    """
    out = []
    for path in _files(config.files):
        try:
            st = os.stat(path)
        except OSError:
            continue
        try:
            content = read_bounded_text(Path(path), MAX_FILE_SD_BYTES).encode("utf-8")
        except ValueError:
            digest = -1
        else:
            digest = int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "big")
        out.append((path, st.st_mtime_ns, digest))
    return tuple(out)


def _url(entry: str, scheme: str) -> str:
    if entry.startswith(("http://", "https://")):
        return entry
    return f"{scheme}://{entry}"


def _url_problem(url: str) -> str | None:
    if sanitize(url) != url:
        # Such a URL cannot be requested, and its text would reach the url label and every log line about it.
        return "url: contains control characters or invalid Unicode"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "url: invalid port"
    if not parts.hostname:
        return "url: expected http:// or https:// with a host"
    if len(strip_secrets_from_url(url)) > MAX_CHARS:
        return f"url: longer than {MAX_CHARS} characters without its userinfo and query (it becomes the url label)"
    return None


def _name(url: str) -> str | None:
    """``host:port`` plus the path (``/`` -> ``_``); never the userinfo. None when no valid name results."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    text = host + (f":{port}" if port else "") + parts.path.rstrip("/")
    text = _NAME_UNSAFE.sub("_", text)
    if len(text) > 63:
        # Keep long names unique: a truncated prefix plus a digest of the whole.
        text = text[:54] + "-" + hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return text if is_valid_name(text) else None


def _validation_message(exc: ValidationError) -> str:
    # Never the input values: a URL may carry a password in its userinfo.
    messages = []
    for item in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        message = str(item["msg"]).removeprefix("Value error, ")
        messages.append(f"{loc}: {message}" if loc else message)
    return "; ".join(messages) or "invalid target"


def parse_file_sd(data: Any, source: str, config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
    """Targets and problems (``file.json[2].labels: ...``) from one decoded file; never raises."""
    targets: list[TargetConfig] = []
    problems: list[str] = []
    if data is None:  # an empty YAML file (or JSON ``null``) lists no targets, as in Prometheus
        return [], []
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
        scheme = str(raw_labels.get("__scheme__", "http"))
        if scheme not in {"http", "https"}:
            problems.append(f"{where}.labels: __scheme__ must be http or https")
            continue
        # Label values become label values of every series of the target, and appear in logs: made encodable and
        # free of control characters as any server string is (their length is validated below).
        labels = {str(k): sanitize(v) for k, v in raw_labels.items() if not str(k).startswith("__")}
        name_label = labels.pop("name", None)
        try:
            labels = validate_labels(labels)
        except ValueError as exc:
            problems.append(f"{where}.labels: {exc}")
            continue
        if name_label and len(entries) > 1:
            problems.append(f"{where}.labels: 'name' ignored: it names a group of one target, this one has "
                            f"{len(entries)}")
        for position, entry in enumerate(entries):
            if len(targets) >= MAX_TARGETS_PER_FILE:
                problems.append(f"{source}: more than {MAX_TARGETS_PER_FILE} targets; the rest ignored")
                return targets, problems
            url = _url(entry, scheme)
            bad_url = _url_problem(url)
            if bad_url is not None:
                problems.append(f"{where}.targets[{position}]: {bad_url}")
                continue
            name = name_label if name_label and len(entries) == 1 else _name(url)
            if name is None:
                problems.append(f"{where}.targets[{position}]: no valid target name can be made from this "
                                "entry; give the group a 'name' label")
                continue
            try:
                targets.append(TargetConfig(name=name, kind=config.kind, url=url, labels=labels,
                                            canary=config.canary))
            except ValidationError as exc:
                problems.append(f"{where}.targets[{position}]: {_validation_message(exc)}")
    return targets, problems


def _read(path: str) -> tuple[Any, str | None]:
    """(decoded data, None), or (None, the problem)."""
    try:
        text = read_bounded_text(Path(path), MAX_FILE_SD_BYTES)
    except ValueError as exc:
        return None, f"{path}: cannot read ({exc})"
    try:
        return (json.loads(text) if path.endswith(".json") else yaml.load(text, Loader=_YAML_LOADER)), None
    except (ValueError, yaml.YAMLError, RecursionError):
        return None, f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}"


def _decode(path: str) -> tuple[Any, str | None]:
    """(decoded data, problem); on a problem the data is the file's last good content, if any."""
    data, problem = _read(path)
    if problem is None:
        _last_good[path] = data
        return data, None
    if path in _last_good:
        return _last_good[path], f"{problem}; keeping the targets of its last good read"
    return None, problem


def load_discovered(config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
    """Every target of every matched file; duplicate names keep the first (sorted by file path)."""
    found: dict[str, TargetConfig] = {}
    problems: list[str] = []
    for gone in [p for p in _last_good if not os.path.exists(p)]:
        del _last_good[gone]
    for path in _files(config.files):
        data, problem = _decode(path)
        if problem is not None:
            problems.append(problem)
        targets, more = parse_file_sd(data, path, config)
        problems.extend(more)
        for target in targets:
            if target.name in found:
                problems.append(f"{path}: duplicate target {target.name!r} ignored")
                continue
            found[target.name] = target
    return list(found.values()), problems
