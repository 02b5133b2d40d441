"""file_sd label names that are not strings, and a file the parser fails on: each costs its own file only.

YAML decodes an unquoted mapping key to whatever it looks like: ``0xfff...`` to an int (of thousands of digits,
which ``str()`` refuses to write), ``on`` to True, ``2024-01-01`` to a date. A generator that writes such a key
must get a problem line for that group while every other group and file still loads.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from comfywatch.config import DiscoveryConfig, TargetConfig
from comfywatch.daemon import discovery
from comfywatch.daemon.discovery import load_discovered, parse_file_sd

#: Hex digits of an integer whose decimal form is past Python's 4,300-digit int-to-str limit.
HUGE_HEX_DIGITS = 4000


def test_label_names_that_are_not_strings_are_problems_of_their_group() -> None:
    """An int too large for str(), a boolean, a date and None as label names are each a problem naming their
    group (never the key itself); the groups with string names load."""
    huge = int("f" * HUGE_HEX_DIGITS, 16)
    groups: list[Any] = [
        {"targets": ["127.0.0.1:1"], "labels": {"name": "first"}},
        {"targets": ["127.0.0.1:2"], "labels": {huge: "x"}},
        {"targets": ["127.0.0.1:3"], "labels": {True: "x"}},
        {"targets": ["127.0.0.1:4"], "labels": {datetime.date(2024, 1, 1): "x"}},
        {"targets": ["127.0.0.1:5"], "labels": {None: "x"}},
        {"targets": ["127.0.0.1:6"], "labels": {"name": "last", "rack": "r1"}},
    ]
    targets, problems = parse_file_sd(groups, "fleet.yml", DiscoveryConfig())
    assert [(t.name, t.labels) for t in targets] == [("first", {}), ("last", {"rack": "r1"})]
    assert problems == [f"fleet.yml[{i}].labels: label names must be strings (quote them in YAML)"
                        for i in (1, 2, 3, 4)]


def write_hostile_yaml(path: Path) -> None:
    """A YAML file with a good group and one whose label key PyYAML decodes to an int of ~4,800 digits."""
    path.write_text(
        "- targets: ['127.0.0.1:2']\n  labels: {name: same-file}\n"
        "- targets: ['127.0.0.1:3']\n  labels:\n    ? 0x" + "f" * HUGE_HEX_DIGITS + "\n    : x\n",
        encoding="utf-8",
    )


def test_a_huge_integer_label_key_costs_its_group_only(tmp_path: Path) -> None:
    """Between two good files, a YAML file with a 4,000-hex-digit label key: every other target loads (the good
    group of that file too) and the problem names the group."""
    (tmp_path / "a.json").write_text(json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"name": "before"}}]),
                                     encoding="utf-8")
    write_hostile_yaml(tmp_path / "b.yml")
    (tmp_path / "c.json").write_text(json.dumps([{"targets": ["127.0.0.1:4"], "labels": {"name": "after"}}]),
                                     encoding="utf-8")

    targets, problems = load_discovered(DiscoveryConfig(files=(str(tmp_path / "*"),)))

    assert [t.name for t in targets] == ["before", "same-file", "after"]
    assert problems == [f"{tmp_path / 'b.yml'}[1].labels: label names must be strings (quote them in YAML)"]


def test_a_file_the_parser_fails_on_keeps_its_last_good_targets_and_costs_no_other_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When parsing one file raises after all (standing in for a bug yet unknown), that file is a problem line
    that says only the exception's type, it keeps the targets of its last good read, and the other files load."""
    fragile, steady = tmp_path / "a.json", tmp_path / "b.json"
    fragile.write_text(json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"name": "fragile"}}]), encoding="utf-8")
    steady.write_text(json.dumps([{"targets": ["127.0.0.1:2"], "labels": {"name": "steady"}}]), encoding="utf-8")
    config = DiscoveryConfig(files=(str(tmp_path / "*.json"),))
    assert [t.name for t in load_discovered(config)[0]] == ["fragile", "steady"]

    real_parse = discovery.parse_file_sd

    def parse_tripping_on_a_marker(data: Any, source: str, config: DiscoveryConfig
                                   ) -> tuple[list[TargetConfig], list[str]]:
        if any(group.get("labels", {}).get("trip") for group in data):
            raise RuntimeError("http://user:s3cret@127.0.0.1:9")
        return real_parse(data, source, config)

    monkeypatch.setattr(discovery, "parse_file_sd", parse_tripping_on_a_marker)
    fragile.write_text(json.dumps([{"targets": ["127.0.0.1:9"], "labels": {"name": "new", "trip": "yes"}}]),
                       encoding="utf-8")

    targets, problems = load_discovered(config)

    assert [t.name for t in targets] == ["fragile", "steady"]
    assert problems == [f"{fragile}: cannot be used (RuntimeError while reading its target groups); "
                        "keeping the targets of its last good read"]


def test_a_new_file_the_parser_fails_on_costs_no_other_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file never read well before that the parser fails on lists no target; the other file's load."""
    (tmp_path / "a.json").write_text(json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"name": "broken"}}]),
                                     encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps([{"targets": ["127.0.0.1:2"], "labels": {"name": "steady"}}]),
                                     encoding="utf-8")
    real_parse = discovery.parse_file_sd

    def parse_failing_on_a(data: Any, source: str, config: DiscoveryConfig) -> tuple[list[TargetConfig], list[str]]:
        if source.endswith("a.json"):
            raise ValueError("boom")
        return real_parse(data, source, config)

    monkeypatch.setattr(discovery, "parse_file_sd", parse_failing_on_a)

    targets, problems = load_discovered(DiscoveryConfig(files=(str(tmp_path / "*.json"),)))

    assert [t.name for t in targets] == ["steady"]
    assert problems == [f"{tmp_path / 'a.json'}: cannot be used (ValueError while reading its target groups)"]
