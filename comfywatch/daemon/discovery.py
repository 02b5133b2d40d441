"""Target discovery from Prometheus ``file_sd`` files (JSON or YAML), re-read on change and on SIGHUP.

Each file holds ``[{"targets": ["host:port" | "http(s)://host:port/prefix", ...], "labels": {...}}, ...]``.
A group's labels become extra labels on that target's series (validated, bounded); the special label
``name`` (if present) names a single-target group, otherwise the name is ``host:port`` (plus the URL path
with ``/`` turned into ``_``, so that ``/t/0`` and ``/t/1`` behind one proxy stay two targets). Labels
starting with ``__`` are Prometheus-internal and dropped, as Prometheus does, except ``__scheme__``, which
gives the scheme of entries written without one.

Like Prometheus, a file that cannot be read or decoded keeps the targets of its last good read (a file
caught half-written must not drop, and then re-create with empty state, every target it lists); a file
that is deleted removes its targets. A file whose content the parser unexpectedly fails on is treated as
one that cannot be decoded: a problem line for that file, never a reason to drop the other files' targets.

The work per file is bounded, not only its size: YAML aliases (``- *group`` repeated) make a small file
decode to a document that lists one large group many times over, so at most :data:`MAX_ITEMS_PER_FILE`
groups, labels and target entries are examined and :data:`MAX_PROBLEMS_PER_FILE` problems listed per file;
the rest are counted in one summary problem each.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from time import time_ns
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from comfywatch.config import (
    MAX_URL_CHARS,
    DiscoveryConfig,
    TargetConfig,
    is_valid_name,
    read_bounded_bytes,
    read_bounded_text,
    strip_secrets_from_url,
    url_problem,
    validate_labels,
)
from comfywatch.parse.text import MAX_CHARS

__all__ = [
    "MAX_FILE_SD_BYTES",
    "MAX_ITEMS_PER_FILE",
    "MAX_PROBLEMS_PER_FILE",
    "discovery_fingerprint",
    "load_discovered",
    "parse_file_sd",
]

MAX_TARGETS_PER_FILE = 10_000
#: Groups, labels and target entries (valid or not) examined per file, each counting one: room for
#: MAX_TARGETS_PER_FILE single-target groups with 18 labels each, or a valid entry for every invalid one. A
#: file listing more (a YAML alias repeated) has the rest ignored, so its cost does not grow with the repeats.
MAX_ITEMS_PER_FILE = 20 * MAX_TARGETS_PER_FILE
#: Problems listed per file; the rest are counted in one line, so a file of bad entries costs a few log lines.
MAX_PROBLEMS_PER_FILE = 100
#: Longest label name or value looked at: validate_labels allows 128 characters, sanitize only shortens, and
#: an aliased string of megabytes must not be scanned once per group that names it.
_MAX_LABEL_TEXT = 1024
#: Largest file_sd file read: MAX_TARGETS_PER_FILE targets with a few labels each take about 2 MB of JSON.
MAX_FILE_SD_BYTES = 4 * 2**20
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")

#: Decoded content of each file's last successful read, by path: served again while the file is broken.
_last_good: dict[str, Any] = {}
#: The daemon loads off its event loop, and a cancelled load's thread may still run when the next one starts.
_last_good_lock = threading.Lock()

#: How long after its last change a file's stat is trusted to show its next change. File timestamps come from a
#: coarse clock (milliseconds, seconds on some filesystems): a same-size rewrite in the tick the file was hashed
#: in leaves its stat as it was, so a file changed that recently is hashed again at every refresh until then.
_RACY_WINDOW_NS = 2 * 10**9
#: Per path: the stat the file had when hashed, its digest, and whether that stat was old enough to be trusted.
_digests: dict[str, tuple[tuple[int, ...], int, bool]] = {}
_digests_lock = threading.Lock()


# libyaml's safe loader when PyYAML was built with it: the pure-Python one takes seconds for a large file.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _files(patterns: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        found.update(glob.glob(os.path.expanduser(pattern)))
    return sorted(found)


def _stat_key(status: os.stat_result) -> tuple[int, ...]:
    # The ctime too: an in-place rewrite that restores the mtime (cp -p, rsync -t) still changes it.
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _file_digest(path: str) -> int:
    """A digest of the file's bytes, or -1 when it cannot be read (too large, not a regular file, gone)."""
    try:
        content = read_bounded_bytes(Path(path), MAX_FILE_SD_BYTES)
    except ValueError:
        return -1
    return int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "big")


def discovery_fingerprint(config: DiscoveryConfig) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, content digest) of every matched file: a change means "reload".

    The digest (not just the size) catches a same-size rewrite within one mtime tick, such as a label
    value changed from ``a`` to ``b`` by a generator that rewrites the file right after creating it. A file
    that cannot be read (too large, not a regular file) has no digest: its mtime still tells when it changes.

    It runs at every refresh, so a file is read and hashed again only when its stat (device, inode, size, mtime,
    ctime) changed since, or when it had changed too recently for its stat to be trusted: a fleet's files that
    did not change cost one stat each.
    """
    # Taken before any file is looked at: a change made after a file is read is stamped no earlier than this.
    started_ns = time_ns()
    out = []
    with _digests_lock:
        current: dict[str, tuple[tuple[int, ...], int, bool]] = {}
        for path in _files(config.files):
            try:
                status = os.stat(path)
            except OSError:
                continue
            key = _stat_key(status)
            known = _digests.get(path)
            if known is not None and known[0] == key and known[2]:
                current[path] = known
            else:
                settled = max(status.st_mtime_ns, status.st_ctime_ns) < started_ns - _RACY_WINDOW_NS
                current[path] = (key, _file_digest(path), settled)
            out.append((path, status.st_mtime_ns, current[path][1]))
        # Only the files matched now: a deleted file's entry goes with it.
        _digests.clear()
        _digests.update(current)
    return tuple(out)


def _url(entry: str, scheme: str) -> str:
    if entry.startswith(("http://", "https://")):
        return entry
    return f"{scheme}://{entry}"


def _url_problem(url: str) -> str | None:
    # A target's rule (before the entry's name is made from the URL), then file_sd's own: the url label's length.
    problem = url_problem(url)
    if problem is not None:
        return f"url: {problem}"
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


class _Problems:
    """One file's problem lines: the first MAX_PROBLEMS_PER_FILE kept, the rest only counted."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.kept: list[str] = []
        self.unlisted = 0

    def add(self, problem: str) -> None:
        if len(self.kept) < MAX_PROBLEMS_PER_FILE:
            self.kept.append(problem)
        else:
            self.unlisted += 1

    def lines(self, *summary: str) -> list[str]:
        """The kept problems, then the count of the others, then *summary* (always shown: it says what was cut)."""
        more = [f"{self.source}: {self.unlisted} more problems not shown"] if self.unlisted else []
        return [*self.kept, *more, *summary]


def parse_file_sd(data: Any, source: str, config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
    """Targets and problems (``file.json[2].labels: ...``) from one decoded file; never raises.

    At most MAX_ITEMS_PER_FILE groups, labels and entries are examined, and MAX_PROBLEMS_PER_FILE problems
    listed: the cost is bounded whatever the decoded document's size (which YAML aliases can multiply).
    """
    targets: list[TargetConfig] = []
    problems = _Problems(source)
    if data is None:  # an empty YAML file (or JSON ``null``) lists no targets, as in Prometheus
        return [], []
    if not isinstance(data, list):
        return [], [f"{source}: expected a list of target groups"]
    items_cut = f"{source}: more than {MAX_ITEMS_PER_FILE} groups, labels and target entries; the rest ignored"
    left = MAX_ITEMS_PER_FILE  # items that may still be examined
    cut = False  # a group's entries were cut short: nothing after them is examined
    for index, group in enumerate(data):
        where = f"{source}[{index}]"
        # Each part of a group is charged before it is looked at; len() is O(1), so a part too large to
        # examine costs nothing more.
        left -= 1
        if left < 0 or cut:
            return targets, problems.lines(items_cut)
        if not isinstance(group, dict):
            problems.add(f"{where}: expected an object with 'targets' and 'labels'")
            continue
        entries = group.get("targets")
        raw_labels = group.get("labels") or {}
        if isinstance(raw_labels, dict):
            left -= len(raw_labels)
            if left < 0:
                return targets, problems.lines(items_cut)
        if not isinstance(entries, list):
            problems.add(f"{where}.targets: expected a list of strings")
            continue
        # Only the entries the budget still allows are examined, the type check included: with aliases one
        # list of thousands of entries can stand for every group of the file.
        examined = entries[:max(left, 0)]
        left -= len(examined)
        cut = len(examined) < len(entries)
        if not all(isinstance(e, str) for e in examined):
            problems.add(f"{where}.targets: expected a list of strings")
            continue
        if not isinstance(raw_labels, dict) or not all(isinstance(v, str) for v in raw_labels.values()):
            problems.add(f"{where}.labels: expected string values")
            continue
        # YAML reads an unquoted 1, true, on or 2024-01-01 as a number, boolean or date, and str() of an integer
        # of thousands of digits raises: a name is never made from one.
        if not all(isinstance(k, str) for k in raw_labels):
            problems.add(f"{where}.labels: label names must be strings (quote them in YAML)")
            continue
        scheme = str(raw_labels.get("__scheme__", "http"))
        if scheme not in {"http", "https"}:
            problems.add(f"{where}.labels: __scheme__ must be http or https")
            continue
        kept = {k: v for k, v in raw_labels.items() if not k.startswith("__")}
        # Refused on len() alone, before any pass over the text (what validate_labels would say of them).
        long_key = next((k for k in kept if len(k) > _MAX_LABEL_TEXT), None)
        if long_key is not None:
            problems.add(f"{where}.labels: label name {long_key[:40]!r} is not a valid Prometheus label name "
                         "of at most 128 characters")
            continue
        long_value = next((k for k, v in kept.items() if len(v) > _MAX_LABEL_TEXT), None)
        if long_value is not None:
            problems.add(f"{where}.labels: label {long_value[:40]!r}: value must be a string of at most 128 characters")
            continue
        # The name, if given, must pass the target-name rule; the values are cleaned by validate_labels.
        name_label = kept.pop("name", None)
        try:
            labels = validate_labels(kept)
        except ValueError as exc:
            problems.add(f"{where}.labels: {exc}")
            continue
        if name_label and len(entries) > 1:
            problems.add(f"{where}.labels: 'name' ignored: it names a group of one target, this one has "
                         f"{len(entries)}")
        for position, entry in enumerate(examined):
            if len(targets) >= MAX_TARGETS_PER_FILE:
                targets_cut = f"{source}: more than {MAX_TARGETS_PER_FILE} targets; the rest ignored"
                return targets, problems.lines(targets_cut)
            # The URL would be refused anyway (TargetConfig.url); refused on len() alone, before any pass over
            # it, as an aliased string of megabytes can be every entry of the file.
            if len(entry) > MAX_URL_CHARS:
                problems.add(f"{where}.targets[{position}]: url: longer than {MAX_URL_CHARS} characters")
                continue
            url = _url(entry, scheme)
            bad_url = _url_problem(url)
            if bad_url is not None:
                problems.add(f"{where}.targets[{position}]: {bad_url}")
                continue
            name = name_label if name_label and len(entries) == 1 else _name(url)
            if name is None:
                problems.add(f"{where}.targets[{position}]: no valid target name can be made from this "
                             "entry; give the group a 'name' label")
                continue
            try:
                targets.append(TargetConfig(name=name, kind=config.kind, url=url, labels=labels,
                                            canary=config.canary))
            except ValidationError as exc:
                problems.add(f"{where}.targets[{position}]: {_validation_message(exc)}")
    return targets, problems.lines(*([items_cut] if cut else []))


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


def _parse_or_problem(data: Any, path: str, config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]] | str:
    """parse_file_sd's result, or the problem line when it raised after all."""
    try:
        return parse_file_sd(data, path, config)
    except Exception as exc:
        # parse_file_sd is written never to raise; a document that still makes it must cost its own file only.
        # Only the type is said: the message may quote the file, and a URL in it may hold a password.
        return f"{path}: cannot be used ({type(exc).__name__} while reading its target groups)"


def _load_file(path: str, config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
    """One file's targets and problems; a file that cannot be read, decoded or parsed gives those of its last good
    read, if any."""
    data, problem = _read(path)
    if problem is None:
        parsed = _parse_or_problem(data, path, config)
        if not isinstance(parsed, str):
            _last_good[path] = data
            return parsed
        problem = parsed
    if path not in _last_good:
        return [], [problem]
    kept = _parse_or_problem(_last_good[path], path, config)
    if isinstance(kept, str):
        return [], [problem, kept]
    targets, more = kept
    return targets, [f"{problem}; keeping the targets of its last good read", *more]


def load_discovered(config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
    """Every target of every matched file; duplicate names keep the first (sorted by file path). Never raises for
    a file's content: what a file costs is its own targets, with a problem line saying why."""
    found: dict[str, TargetConfig] = {}
    problems: list[str] = []
    with _last_good_lock:
        for gone in [p for p in _last_good if not os.path.exists(p)]:
            del _last_good[gone]
        for path in _files(config.files):
            targets, more = _load_file(path, config)
            problems.extend(more)
            # Listed within the same per-file bound: a file may repeat one target MAX_TARGETS_PER_FILE times.
            duplicates = _Problems(path)
            for target in targets:
                if target.name in found:
                    duplicates.add(f"{path}: duplicate target {target.name!r} ignored")
                    continue
                found[target.name] = target
            problems.extend(duplicates.lines())
    return list(found.values()), problems
