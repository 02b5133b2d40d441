"""file_sd discovery: targets added, changed and removed without a restart; clear label problems.

The real daemon runs in-process with ``[discovery] refresh_interval = "1s"`` (the shortest the configuration
accepts, as for the poll interval) against one simulator serving ``/t/0`` ... ``/t/3``; every wait is a
deadline poll of ``/metrics``.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfywatch.config import DiscoveryConfig
from comfywatch.daemon.discovery import (
    MAX_ITEMS_PER_FILE,
    MAX_PROBLEMS_PER_FILE,
    discovery_fingerprint,
    load_discovered,
)
from comfywatch.sim.admin import SimHandle, start_sim
from tests.helpers import Metrics, eventually, running_daemon, scrape


class LogRecorder:
    """Stands in for ``comfywatch.daemon.service.log``: keeps (level, event, fields) of every call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, *args: Any, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return record

    def problems(self) -> list[str]:
        return [str(fields.get("problem")) for _, event, fields in self.events if event == "discovery_problem"]


@pytest.fixture
async def fleet() -> AsyncIterator[SimHandle]:
    """One simulator process-in-loop serving four targets under /t/0 ... /t/3."""
    async with await start_sim(targets=4) as handle:
        yield handle


def write_atomically(path: Path, text: str) -> None:
    """How file_sd files should be written (and how generators usually do it): rename over the old file."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def config(sd_dir: Path, refresh: str = "1s") -> str:
    return f"""
[defaults]
interval = "1s"
timeout = "500ms"
websocket_monitor = false

[discovery]
files = ["{sd_dir}/*.json", "{sd_dir}/*.yml"]
refresh_interval = "{refresh}"
"""


def up_targets(metrics: Metrics) -> dict[str, dict[str, str]]:
    """target name -> labels of its comfyui_up series, for every target whose latest poll succeeded."""
    return {labels["target"]: labels for labels, value in metrics.find("comfyui_up") if value == 1.0}


async def test_file_sd_add_change_remove_without_restart(fleet: SimHandle, tmp_path: Path) -> None:
    """New files/groups appear, label changes re-label, deletions disappear; untouched targets keep state."""
    sd = tmp_path / "sd"
    sd.mkdir()
    write_atomically(sd / "a.json", json.dumps([
        {"targets": [fleet.target_url(0)], "labels": {"name": "studio-a", "rack": "r1"}},
    ]))
    async with running_daemon(config(sd), tmp_path) as (daemon, base):
        async def metrics() -> Metrics:
            return await scrape(f"{base}/metrics")

        first = await eventually(metrics, lambda m: "studio-a" in up_targets(m), what="studio-a up")
        assert up_targets(first)["studio-a"]["rack"] == "r1"
        kept = daemon.runtimes["studio-a"]

        # Add: a YAML file with one named target and a group of two unnamed ones behind the same host.
        port = fleet.url.rsplit(":", 1)[1]
        write_atomically(sd / "b.yml", yaml.safe_dump([
            {"targets": [fleet.target_url(1)], "labels": {"name": "studio-b", "rack": "r2"}},
            {"targets": [fleet.target_url(2), fleet.target_url(3)], "labels": {"team": "render"}},
        ]))
        unnamed = {f"127.0.0.1:{port}_t_2", f"127.0.0.1:{port}_t_3"}
        added = await eventually(metrics, lambda m: {"studio-a", "studio-b", *unnamed} <= set(up_targets(m)),
                                 what="every discovered target up")
        assert up_targets(added)["studio-b"]["rack"] == "r2"
        assert {up_targets(added)[name]["team"] for name in unnamed} == {"render"}
        assert added.value("comfywatch_targets", kind="local") == 4.0
        assert daemon.runtimes["studio-a"] is kept

        # Change: the same-size rewrite of one label value re-labels that target only.
        write_atomically(sd / "b.yml", yaml.safe_dump([
            {"targets": [fleet.target_url(1)], "labels": {"name": "studio-b", "rack": "r3"}},
            {"targets": [fleet.target_url(2), fleet.target_url(3)], "labels": {"team": "render"}},
        ]))
        changed = await eventually(
            metrics, lambda m: m.value("comfyui_up", target="studio-b", rack="r3") == 1.0, what="studio-b re-labelled")
        assert changed.find("comfyui_up", target="studio-b", rack="r2") == []
        assert daemon.runtimes["studio-a"] is kept
        before = kept.state.requests.get(("system_stats", "200"), 0)
        assert before > 0

        # Remove: deleting the file drops its targets; the other file's target is untouched.
        (sd / "b.yml").unlink()
        removed = await eventually(metrics, lambda m: set(up_targets(m)) == {"studio-a"}, what="b.yml targets gone")
        assert removed.find("comfyui_up", target="studio-b") == []
        assert removed.value("comfywatch_targets", kind="local") == 1.0
        assert daemon.runtimes["studio-a"] is kept
        # Its counters kept growing through all of this: the state was never rebuilt.
        assert removed.value("comfyui_requests_total", target="studio-a", rack="r1", endpoint="system_stats",
                             code="200") >= before  # type: ignore[operator]
    # Removed and replaced targets' clients were closed for good: nothing is left to be collected unclosed.
    gc.collect()


async def test_broken_file_keeps_its_last_good_targets(
    fleet: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A half-written file is logged and its previous targets stay (with their state), like Prometheus."""
    import comfywatch.daemon.service

    recorder = LogRecorder()
    monkeypatch.setattr(comfywatch.daemon.service, "log", recorder)
    sd = tmp_path / "sd"
    sd.mkdir()
    path = sd / "fleet.json"
    write_atomically(path, json.dumps([{"targets": [fleet.target_url(0)], "labels": {"name": "kept"}}]))
    async with running_daemon(config(sd), tmp_path) as (daemon, base):
        async def metrics() -> Metrics:
            return await scrape(f"{base}/metrics")

        await eventually(metrics, lambda m: "kept" in up_targets(m), what="kept up")
        runtime = daemon.runtimes["kept"]
        path.write_text('[{"targets": ["127.0.0.1:1"', encoding="utf-8")
        await eventually(lambda: _async(recorder.problems()), lambda p: any(str(path) in x for x in p),
                         what="problem logged")
        assert f"{path}: not valid JSON; keeping the targets of its last good read" in recorder.problems()
        after = await metrics()
        assert up_targets(after).keys() == {"kept"}
        assert daemon.runtimes["kept"] is runtime


async def test_label_problems_are_logged_with_file_and_index(
    fleet: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad, reserved and too many labels each log ``file[index].labels: why``; valid groups still load."""
    import comfywatch.daemon.service

    recorder = LogRecorder()
    monkeypatch.setattr(comfywatch.daemon.service, "log", recorder)
    sd = tmp_path / "sd"
    sd.mkdir()
    path = sd / "groups.json"
    write_atomically(path, json.dumps([
        {"targets": [fleet.target_url(0)], "labels": {"name": "bad-name", "1rack": "x"}},
        {"targets": [fleet.target_url(1)], "labels": {"name": "reserved", "target": "x"}},
        {"targets": [fleet.target_url(2)], "labels": {"name": "crowded", **{f"l{i}": "v" for i in range(17)}}},
        {"targets": [fleet.target_url(3)], "labels": {"name": "good", "rack": "r1", "__meta_zone": "dropped"}},
    ]))
    async with running_daemon(config(sd), tmp_path) as (_daemon, base):
        metrics = await eventually(lambda: scrape(f"{base}/metrics"), lambda m: "good" in up_targets(m),
                                   what="the valid group's target up")
        assert set(up_targets(metrics)) == {"good"}
        assert up_targets(metrics)["good"] == {"target": "good", "rack": "r1"}
        problems = recorder.problems()
        assert (f"{path}[0].labels: label name '1rack' is not a valid Prometheus label name of at most 128 characters"
                in problems)
        assert f"{path}[1].labels: label name 'target' is reserved by comfywatch" in problems
        assert f"{path}[2].labels: at most 16 extra labels per target" in problems
        assert not any(f"{path}[3]" in problem for problem in problems)
        assert all(level == "warning" for level, event, _ in recorder.events if event == "discovery_problem")


async def test_a_repeated_yaml_alias_logs_a_bounded_number_of_problems(
    fleet: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A YAML file whose group of 5,000 bad entries is repeated by aliases past MAX_ITEMS_PER_FILE entries logs
    at most MAX_PROBLEMS_PER_FILE of them plus two summary lines (the count of the rest, the cut), and the
    good group listed before it comes up."""
    import comfywatch.daemon.service

    recorder = LogRecorder()
    monkeypatch.setattr(comfywatch.daemon.service, "log", recorder)
    sd = tmp_path / "sd"
    sd.mkdir()
    path = sd / "bomb.yml"
    group_size = 5000
    write_atomically(path, (
        f'- {{targets: ["{fleet.target_url(0)}"], labels: {{name: kept}}}}\n'
        + "- &g {targets: [" + ", ".join(['"h:99999"'] * group_size) + "]}\n"
        + "- *g\n" * (MAX_ITEMS_PER_FILE // group_size + 1)
    ))
    async with running_daemon(config(sd), tmp_path) as (_daemon, base):
        await eventually(lambda: scrape(f"{base}/metrics"), lambda m: "kept" in up_targets(m), what="kept up")
        # Distinct lines: the file may be read more than once, each read logging the same bounded list.
        problems = set(recorder.problems())
        assert len(problems) <= MAX_PROBLEMS_PER_FILE + 2
        assert (f"{path}: more than {MAX_ITEMS_PER_FILE} groups, labels and target entries; the rest ignored"
                in problems)


async def test_hostile_label_text_costs_no_target_its_lines(fleet: SimHandle, tmp_path: Path) -> None:
    """A group whose label holds a lone surrogate and a terminal escape is served sanitized; /metrics answers 200
    in both formats and every target is up."""
    sd = tmp_path / "sd"
    sd.mkdir()
    write_atomically(sd / "a.json", json.dumps([
        {"targets": [fleet.target_url(0)], "labels": {"name": "hostile", "rack": "r\ud800\x1b[2J"}},
        {"targets": [fleet.target_url(1)], "labels": {"name": "healthy"}},
    ]))
    async with running_daemon(config(sd), tmp_path) as (_daemon, base):
        metrics = await eventually(lambda: scrape(f"{base}/metrics"),
                                   lambda m: {"hostile", "healthy"} <= set(up_targets(m)), what="both targets up")
        assert up_targets(metrics)["hostile"] == {"target": "hostile", "rack": "r\ufffd [2J"}
        openmetrics = await scrape(f"{base}/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert {"hostile", "healthy"} <= set(up_targets(openmetrics))


async def test_sighup_reload_rereads_files_before_the_refresh_interval(fleet: SimHandle, tmp_path: Path) -> None:
    """With a 1 h refresh interval, a reload (what SIGHUP triggers) still picks up a new file at once."""
    sd = tmp_path / "sd"
    sd.mkdir()
    write_atomically(sd / "a.json", json.dumps([{"targets": [fleet.target_url(0)], "labels": {"name": "one"}}]))
    async with running_daemon(config(sd, refresh="1h"), tmp_path) as (daemon, base):
        await eventually(lambda: scrape(f"{base}/metrics"), lambda m: "one" in up_targets(m), what="one up")
        write_atomically(sd / "b.json", json.dumps([{"targets": [fleet.target_url(1)], "labels": {"name": "two"}}]))
        assert "two" not in daemon.runtimes
        assert await daemon.reload() is True
        assert set(daemon.runtimes) == {"one", "two"}
        await eventually(lambda: scrape(f"{base}/metrics"), lambda m: {"one", "two"} <= set(up_targets(m)),
                         what="two up after reload")


async def test_removed_target_sends_nothing_after_removal(fleet: SimHandle, tmp_path: Path) -> None:
    """A check of a removed target that was waiting for a request slot is cancelled, not run on a reopened client."""
    sd = tmp_path / "sd"
    sd.mkdir()
    write_atomically(sd / "fleet.json", json.dumps([{"targets": [fleet.target_url(0)], "labels": {"name": "victim"}}]))
    text = config(sd, refresh="1h").replace("[discovery]", "[server]\nmax_concurrency = 1\n\n[discovery]")
    text = text.replace('interval = "1s"', 'interval = "1h"')
    async with running_daemon(text, tmp_path) as (daemon, _base):
        assert daemon.limiter is not None
        victim = daemon.runtimes["victim"]
        await eventually(lambda: _async(victim.state.check("jobs").last_success), lambda t: t is not None,
                         what="victim's first poll done")
        # Hold the daemon's only request slot, so the next check of victim queues for it.
        await daemon.limiter.acquire()
        try:
            sent = sum(victim.state.requests.values())
            victim.state.checks.clear()
            daemon.trigger("victim", "system")
            await eventually(lambda: _async("system" in victim.state.checks), bool, what="victim's check queued")
            write_atomically(sd / "fleet.json", "[]")
            assert await daemon.reload() is True
            assert "victim" not in daemon.runtimes
        finally:
            daemon.limiter.release()
        await eventually(lambda: _async(victim.state.check("system").duration), lambda d: d is not None,
                         what="victim's queued check ended")
        assert sum(victim.state.requests.values()) == sent
        # Closed for good: whatever asks for its session later gets none, and opens no connection.
        with pytest.raises(ConnectionError):
            _ = victim.http.session


def test_targets_behind_one_host_get_distinct_names_without_secrets(tmp_path: Path) -> None:
    """Path prefixes keep targets apart; userinfo never reaches the name; __scheme__ picks https."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps([
        {"targets": ["proxy:8443/gpu/0", "proxy:8443/gpu/1"], "labels": {"__scheme__": "https"}},
        {"targets": ["http://user:s3cret@10.0.0.5:8188"]},
    ]), encoding="utf-8")
    targets, problems = load_discovered(DiscoveryConfig(files=(str(path),)))
    assert problems == []
    assert [(t.name, t.url) for t in targets] == [
        ("proxy:8443_gpu_0", "https://proxy:8443/gpu/0"),
        ("proxy:8443_gpu_1", "https://proxy:8443/gpu/1"),
        ("10.0.0.5:8188", "http://user:s3cret@10.0.0.5:8188"),
    ]
    assert targets[2].public_url == "http://10.0.0.5:8188"


def test_target_problems_name_the_entry_and_never_echo_it(tmp_path: Path) -> None:
    """An invalid entry is reported as ``file[i].targets[j]: why`` without its (possibly secret) text."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([
        {"targets": ["http://user:s3cret@host:99999", "ok:1", "[::1]:8188"]},
        {"targets": ["a:1", "b:2"], "labels": {"name": "shared"}},
    ]), encoding="utf-8")
    targets, problems = load_discovered(DiscoveryConfig(files=(str(path),)))
    assert [t.name for t in targets] == ["ok:1", "a:1", "b:2"]
    assert problems == [
        f"{path}[0].targets[0]: url: invalid port",
        f"{path}[0].targets[2]: no valid target name can be made from this entry; give the group a 'name' label",
        f"{path}[1].labels: 'name' ignored: it names a group of one target, this one has 2",
    ]
    assert not any("s3cret" in problem for problem in problems)


def test_fingerprint_sees_a_same_size_rewrite(tmp_path: Path) -> None:
    """Changing ``r1`` to ``r2`` in place (same size, maybe same mtime tick) still changes the fingerprint."""
    path = tmp_path / "a.json"
    path.write_text('[{"targets": ["a:1"], "labels": {"rack": "r1"}}]', encoding="utf-8")
    config = DiscoveryConfig(files=(str(tmp_path / "*.json"),))
    before = discovery_fingerprint(config)
    stat = path.stat()
    path.write_text('[{"targets": ["a:1"], "labels": {"rack": "r2"}}]', encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert discovery_fingerprint(config) != before


def test_empty_yaml_file_lists_no_targets(tmp_path: Path) -> None:
    """An empty YAML file is an empty target list (as in Prometheus), not an error."""
    (tmp_path / "empty.yml").write_text("", encoding="utf-8")
    assert load_discovered(DiscoveryConfig(files=(str(tmp_path / "*.yml"),))) == ([], [])


async def _async(value: Any) -> Any:
    return value
