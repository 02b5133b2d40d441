"""file_sd entries with hostile text: labels made safe, unusable URLs refused with a problem that names the entry.

A file_sd file is written by a generator from whatever a service registry holds; JSON lets it carry lone
surrogates (``"\\ud800"``) and control characters. Its labels become labels of every series of the target, its
URL the ``url`` label: one such entry must not cost the fleet its ``/metrics``.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import SupportsIndex, TypeVar, overload

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

import comfywatch.config
from comfywatch.config import DiscoveryConfig
from comfywatch.daemon import discovery
from comfywatch.daemon.discovery import (
    MAX_FILE_SD_BYTES,
    MAX_ITEMS_PER_FILE,
    MAX_PROBLEMS_PER_FILE,
    MAX_TARGETS_PER_FILE,
    discovery_fingerprint,
    load_discovered,
    parse_file_sd,
)
from comfywatch.export.collector import DaemonInfo, metrics_body
from comfywatch.state import TargetState

T = TypeVar("T")


def discovered(tmp_path: Path, groups: list[object]) -> tuple[list[tuple[str, str, dict[str, str]]], list[str]]:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(groups), encoding="utf-8")
    targets, problems = load_discovered(DiscoveryConfig(files=(str(path),)))
    return [(t.name, t.url, t.labels) for t in targets], [p.removeprefix(f"{path}") for p in problems]


def test_label_values_are_sanitized(tmp_path: Path) -> None:
    """A lone surrogate in a label value becomes U+FFFD and control characters a space; the target is kept."""
    targets, problems = discovered(tmp_path, [
        {"targets": ["127.0.0.1:1"], "labels": {"name": "gpu-1", "rack": "r\ud800", "team": "a\x1b[2Jb\r\nc"}},
    ])
    assert problems == []
    assert targets == [("gpu-1", "http://127.0.0.1:1", {"rack": "r\ufffd", "team": "a [2Jb c"})]


def test_sanitized_labels_render_for_every_target(tmp_path: Path) -> None:
    """Rendered, the discovered labels are valid exposition next to another target's lines."""
    targets, _ = discovered(tmp_path, [
        {"targets": ["127.0.0.1:1"], "labels": {"name": "hostile", "rack": "r\ud800"}},
        {"targets": ["127.0.0.1:2"], "labels": {"name": "healthy"}},
    ])
    states = []
    for name, url, labels in targets:
        state = TargetState(name, "local", url, endpoints=["system_stats"], labels=labels)
        state.set_up(True)
        states.append(state)
    text = bytes(metrics_body(states, daemon=DaemonInfo(), openmetrics=False)).decode("utf-8")
    ups = {s.labels["target"]: s.value for f in parse_text(text) for s in f.samples if s.name == "comfyui_up"}
    assert ups == {"hostile": 1.0, "healthy": 1.0}
    assert 'comfyui_up{target="hostile",rack="r\ufffd"} 1.0' in text.splitlines()


def test_unusable_urls_and_names_are_refused(tmp_path: Path) -> None:
    """A URL with a lone surrogate or a control character, a URL whose label would be over 256 characters, and
    a name with a line break are each a problem naming the entry (never its text); valid entries still load."""
    long_path = "/p" * 200
    targets, problems = discovered(tmp_path, [
        {"targets": ["http://127.0.0.1:1/\ud800", "http://127.0.0.1:2/a\x1bb", f"127.0.0.1:3{long_path}",
                     "http://user:" + "s" * 1000 + "@127.0.0.1:4/fine"]},
        {"targets": ["127.0.0.1:5"], "labels": {"name": "good\n"}},
    ])
    assert [name for name, _, _ in targets] == ["127.0.0.1:4_fine"]
    assert problems == [
        "[0].targets[0]: url: contains control characters or invalid Unicode",
        "[0].targets[1]: url: contains control characters or invalid Unicode",
        "[0].targets[2]: url: longer than 256 characters without its userinfo and query (it becomes the url label)",
        "[1].targets[0]: name: use 1-63 letters, digits, '_', '-', '.' or ':' (it becomes the target label)",
    ]


def test_a_host_the_http_client_cannot_use_is_refused(tmp_path: Path) -> None:
    """A host urlsplit accepts and the HTTP client refuses (a zero-width space) is a problem naming the entry,
    as in a config file; the other target still loads."""
    targets, problems = discovered(tmp_path, [
        {"targets": ["http://a\u200bb:1"], "labels": {"name": "zero-width"}},
        {"targets": ["127.0.0.1:2"], "labels": {"name": "fine"}},
    ])
    assert [name for name, _, _ in targets] == ["fine"]
    assert problems == ["[0].targets[0]: url: host is not a valid host name"]


def test_a_label_name_with_a_line_break_is_refused(tmp_path: Path) -> None:
    """A label name ending in a line break (which would split the exposition line) is a problem naming the
    group; the other group still loads."""
    targets, problems = discovered(tmp_path, [
        {"targets": ["127.0.0.1:1"], "labels": {"name": "broken", "rack\n": "r1"}},
        {"targets": ["127.0.0.1:2"], "labels": {"name": "fine"}},
    ])
    assert [name for name, _, _ in targets] == ["fine"]
    assert problems == [
        "[0].labels: label name 'rack\\n' is not a valid Prometheus label name of at most 128 characters"]


def peak_allocated(call: Callable[[], T]) -> tuple[T, int]:
    """What *call* returns, and the most memory Python held for it at once."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_oversized_file_is_a_problem_not_a_memory_spike(tmp_path: Path) -> None:
    """A file_sd file of 64 MiB (a generator gone wrong, a log named by mistake) is reported as too large
    without being read: loading it and fingerprinting it for changes each hold well under a megabyte. The
    file's last good targets stay, as for any file that cannot be read."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"name": "kept"}}]), encoding="utf-8")
    config = DiscoveryConfig(files=(str(path),))
    assert [t.name for t in load_discovered(config)[0]] == ["kept"]
    with path.open("r+b") as file:
        file.truncate(64 * 2**20)

    (targets, problems), peak = peak_allocated(lambda: load_discovered(config))
    assert problems == [f"{path}: cannot read (larger than 4MiB); keeping the targets of its last good read"]
    assert [t.name for t in targets] == ["kept"]
    assert peak < 2**20

    fingerprint, peak = peak_allocated(lambda: discovery_fingerprint(config))
    assert [entry[0] for entry in fingerprint] == [str(path)]
    assert peak < 2**20


def test_a_file_at_the_bound_is_read(tmp_path: Path) -> None:
    """A file of exactly MAX_FILE_SD_BYTES loads: the bound is on what a real fleet file may need."""
    path = tmp_path / "fleet.json"
    entry = json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"name": "edge"}}])
    path.write_text(entry + " " * (MAX_FILE_SD_BYTES - len(entry)), encoding="utf-8")
    assert path.stat().st_size == MAX_FILE_SD_BYTES
    targets, problems = load_discovered(DiscoveryConfig(files=(str(path),)))
    assert ([t.name for t in targets], problems) == (["edge"], [])


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str, module: ModuleType = discovery) -> list[int]:
    """Wraps ``<module>.<name>`` (a function of one string); the returned list gets each call's argument length."""
    lengths: list[int] = []
    original = getattr(module, name)

    def counted(text: str) -> object:
        lengths.append(len(text))
        return original(text)

    monkeypatch.setattr(module, name, counted)
    return lengths


def test_a_repeated_yaml_alias_costs_bounded_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of 5,000 bad entries repeated by ``- *g`` until it stands for more than MAX_ITEMS_PER_FILE
    entries: at most MAX_ITEMS_PER_FILE entries are checked, MAX_PROBLEMS_PER_FILE problems are listed plus
    one line counting the rest and one saying the file was cut, and the good group before it still loads."""
    group_size = 5000
    copies = MAX_ITEMS_PER_FILE // group_size + 1
    path = tmp_path / "bomb.yml"
    path.write_text(
        '- {targets: ["127.0.0.1:1"], labels: {name: kept}}\n'
        + "- &g {targets: [" + ", ".join(['"h:99999"'] * group_size) + "]}\n"
        + "- *g\n" * copies,
        encoding="utf-8",
    )
    # A few tens of kilobytes: the size bound alone does not bound the work.
    assert path.stat().st_size < 64 * 2**10
    checked = count_calls(monkeypatch, "_url_problem")

    targets, problems = load_discovered(DiscoveryConfig(files=(str(path),)))

    assert [t.name for t in targets] == ["kept"]
    assert len(checked) <= MAX_ITEMS_PER_FILE
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 2
    assert problems[0] == f"{path}[1].targets[0]: url: invalid port"
    assert problems[-2].startswith(f"{path}: ") and problems[-2].endswith(" more problems not shown")
    assert problems[-1] == (f"{path}: more than {MAX_ITEMS_PER_FILE} groups, labels and target entries; "
                            "the rest ignored")


def test_problems_beyond_the_bound_are_counted_in_one_line(tmp_path: Path) -> None:
    """A file with 50 more bad entries than MAX_PROBLEMS_PER_FILE lists the first MAX_PROBLEMS_PER_FILE
    problems and one line counting the other 50; its good entry loads."""
    targets, problems = discovered(tmp_path, [
        {"targets": ["h:99999"] * (MAX_PROBLEMS_PER_FILE + 50) + ["127.0.0.1:1"]},
    ])
    assert [name for name, _, _ in targets] == ["127.0.0.1:1"]
    assert problems == [f"[0].targets[{i}]: url: invalid port" for i in range(MAX_PROBLEMS_PER_FILE)] + [
        ": 50 more problems not shown"]


def test_an_aliased_long_string_is_not_scanned_once_per_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 MiB label value and a 1 MiB entry, each named by 20 aliases, are refused for their length without
    being scanned: sanitize and the URL check see less than one copy of either in total. Each use is a problem
    naming its group or entry, and the good group loads."""
    big = "x" * 2**20
    uses = 20
    path = tmp_path / "long.yml"
    path.write_text(
        '- {targets: ["127.0.0.1:1"], labels: {name: kept}}\n'
        + f'- {{targets: ["127.0.0.1:2"], labels: {{rack: &v "{big}"}}}}\n'
        + '- {targets: ["127.0.0.1:3"], labels: {rack: *v}}\n' * (uses - 1)
        + f'- {{targets: [&u "127.0.0.1:4/{big}"' + ", *u" * (uses - 1) + "]}\n",
        encoding="utf-8",
    )
    sanitized = count_calls(monkeypatch, "sanitize", comfywatch.config)  # validate_labels cleans label values
    checked = count_calls(monkeypatch, "_url_problem")

    targets, problems = load_discovered(DiscoveryConfig(files=(str(path),)))

    assert [t.name for t in targets] == ["kept"]
    # Less than one pass over the string, where the unbounded code made one per use.
    assert sum(sanitized) + sum(checked) < len(big)
    assert problems == [
        *(f"{path}[{i}].labels: label 'rack': value must be a string of at most 128 characters"
          for i in range(1, uses + 1)),
        *(f"{path}[{uses + 1}].targets[{j}]: url: longer than 2048 characters" for j in range(uses)),
    ]


def test_the_most_targets_with_the_most_labels_fit_the_work_bound() -> None:
    """MAX_TARGETS_PER_FILE single-target groups, each with a name, a scheme and the 16 extra labels a target
    may have, all load without a problem: the bound on work per file is no bound on a valid file."""
    extra = {f"label_{j}": "value" for j in range(16)}
    groups = [{"targets": [f"127.0.0.1:{1 + i}"], "labels": {"name": f"gpu-{i}", "__scheme__": "http", **extra}}
              for i in range(MAX_TARGETS_PER_FILE)]
    targets, problems = parse_file_sd(groups, "fleet.json", DiscoveryConfig())
    assert problems == []
    assert len(targets) == MAX_TARGETS_PER_FILE


class CountingList(list[object]):
    """A list that counts the elements handed out by iteration and by slicing: how many entries were visited."""

    visited = 0

    def __iter__(self) -> Iterator[object]:
        for item in super().__iter__():
            CountingList.visited += 1
            yield item

    @overload
    def __getitem__(self, key: SupportsIndex) -> object: ...
    @overload
    def __getitem__(self, key: slice) -> list[object]: ...
    def __getitem__(self, key: SupportsIndex | slice) -> object:
        if isinstance(key, slice):
            part = super().__getitem__(key)
            CountingList.visited += len(part)
            return part
        CountingList.visited += 1
        return super().__getitem__(key)


def test_a_repeated_group_of_entries_that_are_not_all_strings_is_visited_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One group object (as YAML aliases decode) of 5,000 strings then a number, listed 100 times: its entries
    are visited at most MAX_ITEMS_PER_FILE times in all. Each use examined whole is a problem; the use the
    bound cuts short has its strings examined (the number beyond the cut is not seen); the cut is reported."""
    monkeypatch.setattr(CountingList, "visited", 0)
    group_size, uses = 5000, 100
    group = {"targets": CountingList(["h:1"] * group_size + [1])}
    # Far beyond the bound: the whole list scanned once per use would be 500,100 visits.
    assert uses * (group_size + 1) > 2 * MAX_ITEMS_PER_FILE
    targets, problems = parse_file_sd([group] * uses, "fleet.yml", DiscoveryConfig())
    assert CountingList.visited <= MAX_ITEMS_PER_FILE
    # Each whole use costs the group itself and its entries.
    whole_uses = MAX_ITEMS_PER_FILE // (1 + group_size + 1)
    assert problems == [
        *(f"fleet.yml[{i}].targets: expected a list of strings" for i in range(whole_uses)),
        f"fleet.yml: more than {MAX_ITEMS_PER_FILE} groups, labels and target entries; the rest ignored",
    ]
    assert targets and {t.name for t in targets} == {"h:1"}
