"""discovery_fingerprint runs at every refresh: files that did not change are not read again, changed ones are.

"Long after" a file's last change is had by moving the fingerprint's clock an hour ahead: file timestamps cannot
be set in the past for the ctime, and waiting out the window would make the test slow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from time import time_ns
from typing import Any

import pytest

from comfywatch.config import DiscoveryConfig
from comfywatch.daemon import discovery
from comfywatch.daemon.discovery import discovery_fingerprint

HOUR_NS = 3600 * 10**9


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wraps the file readers the discovery module uses: the returned list gets the path of every file read."""
    read: list[str] = []
    for name in ("read_bounded_bytes", "read_bounded_text"):
        original = getattr(discovery, name, None)
        if original is None:
            continue

        def counted(path: Path, limit: int, original: Callable[[Path, int], Any] = original) -> Any:
            read.append(str(path))
            return original(path, limit)

        monkeypatch.setattr(discovery, name, counted)
    return read


def settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint's clock an hour ahead: every file's last change is long before it."""
    monkeypatch.setattr(discovery, "time_ns", lambda: time_ns() + HOUR_NS, raising=False)


def fleet_files(tmp_path: Path, count: int) -> DiscoveryConfig:
    for index in range(count):
        (tmp_path / f"f{index}.json").write_text(f'[{{"targets": ["127.0.0.1:{index + 1}"]}}]', encoding="utf-8")
    return DiscoveryConfig(files=(str(tmp_path / "*.json"),))


def test_files_unchanged_since_long_before_are_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten files last changed long before the first fingerprint: it reads each once, the next reads none and
    is the same."""
    config = fleet_files(tmp_path, 10)
    settle(monkeypatch)
    hashed = count_reads(monkeypatch)

    first = discovery_fingerprint(config)
    assert len(hashed) == 10
    hashed.clear()
    assert discovery_fingerprint(config) == first
    assert hashed == []


def test_only_the_changed_file_is_read_and_the_change_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of ten settled files, one rewritten with another size and one replaced by a rename are read again (and
    only they); a deleted one leaves the fingerprint."""
    config = fleet_files(tmp_path, 10)
    settle(monkeypatch)
    hashed = count_reads(monkeypatch)
    before = dict((path, digest) for path, _, digest in discovery_fingerprint(config))
    hashed.clear()

    (tmp_path / "f3.json").write_text('[{"targets": ["127.0.0.1:99"]}]', encoding="utf-8")
    replacement = tmp_path / "new.tmp"
    replacement.write_text('[{"targets": ["127.0.0.1:98"]}]', encoding="utf-8")
    os.replace(replacement, tmp_path / "f5.json")
    (tmp_path / "f7.json").unlink()
    after = dict((path, digest) for path, _, digest in discovery_fingerprint(config))

    assert sorted(hashed) == [str(tmp_path / "f3.json"), str(tmp_path / "f5.json")]
    assert set(after) == set(before) - {str(tmp_path / "f7.json")}
    assert [path for path in after if after[path] != before[path]] == [str(tmp_path / "f3.json"),
                                                                       str(tmp_path / "f5.json")]


def test_a_file_changed_just_now_is_read_at_every_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written within the timestamp's resolution of being hashed may be rewritten at the same size and
    time: until its last change is old enough, its stat is not trusted and it is read again each time."""
    config = fleet_files(tmp_path, 1)
    changed = (tmp_path / "f0.json").stat()
    # The clock reads a moment after the file's last change, however long this machine took to get here.
    monkeypatch.setattr(discovery, "time_ns", lambda: max(changed.st_mtime_ns, changed.st_ctime_ns) + 10**6)
    hashed = count_reads(monkeypatch)
    discovery_fingerprint(config)
    discovery_fingerprint(config)
    assert hashed == [str(tmp_path / "f0.json")] * 2


def test_bytes_that_are_not_utf8_are_hashed(tmp_path: Path) -> None:
    """Content is hashed as bytes: two same-size, same-mtime versions of a file that is not UTF-8 differ."""
    path = tmp_path / "f.json"
    config = DiscoveryConfig(files=(str(path),))
    path.write_bytes(b"\xff\xfe[]")
    stat = path.stat()
    before = discovery_fingerprint(config)
    path.write_bytes(b"\xff\xfd[]")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert discovery_fingerprint(config) != before
