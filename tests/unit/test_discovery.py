"""file_sd entries with hostile text: labels made safe, unusable URLs refused with a problem that names the entry.

A file_sd file is written by a generator from whatever a service registry holds; JSON lets it carry lone
surrogates (``"\\ud800"``) and control characters. Its labels become labels of every series of the target, its
URL the ``url`` label: one such entry must not cost the fleet its ``/metrics``.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families as parse_text

from comfywatch.config import DiscoveryConfig
from comfywatch.daemon.discovery import MAX_FILE_SD_BYTES, discovery_fingerprint, load_discovered
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
