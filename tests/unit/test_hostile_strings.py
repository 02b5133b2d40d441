"""Hostile server strings: made safe where they enter (the parsers), and never costing other targets' lines.

A server chooses every string it sends: lone surrogates (no UTF-8 encoder accepts them), terminal escapes,
values of megabytes, a hundred thousand devices. Parsed, each must come out encodable, free of control
characters and bounded; rendered, one target's lines must never take the other targets' with them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from comfywatch.export.collector import DaemonInfo, metrics_body
from comfywatch.export.target_encoder import ENCODE_FAILURES
from comfywatch.parse.cloud import parse_billing_status, parse_cloud_queue, parse_jobs_list
from comfywatch.parse.history import parse_history
from comfywatch.parse.jobs import parse_jobs
from comfywatch.parse.prompt import parse_prompt_accepted, parse_ws_text
from comfywatch.parse.queue import MAX_QUEUE_ITEMS, QueueSnapshot, parse_queue
from comfywatch.parse.system import Device, SystemStats, parse_system_stats
from comfywatch.parse.text import ELLIPSIS, MAX_ARGS, MAX_CHARS, MAX_DEVICES, TRUNCATIONS, Cut
from comfywatch.state import TargetState
from comfywatch.state.trackers import QueueTracker
from tests.fixtures import load_json
from tests.strategies import FUZZ

#: A lone surrogate, a screen clear, a forged red line, a C1 CSI and a line break.
HOSTILE = "cuda:0 \ud800\x1b[2J\x1b[1;31mFAKE: all checks passed\x9b\r\n"
HOSTILE_CLEAN = "cuda:0 \ufffd [2J [1;31mFAKE: all checks passed "
NOW = 1_795_641_200.0
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: Every code point, lone surrogates included (hypothesis leaves them out unless asked).
ANY_CHAR = st.characters(codec=None, exclude_categories=())


def system_body(*, text: str = HOSTILE, devices: int = 1) -> dict[str, Any]:
    """The recorded /system_stats with *text* in every string field and *devices* devices named by it."""
    body = load_json("system_stats.json")
    system = body["system"]
    for key in ("os", "comfyui_version", "python_version", "pytorch_version"):
        system[key] = text
    system["argv"] = ["main.py", text, "--listen", "127.0.0.1"]
    device = body["devices"][0]
    body["devices"] = [{**device, "name": text, "type": text, "index": i} for i in range(devices)]
    return body


def safe(value: str) -> bool:
    return UNSAFE.search(value) is None and len(value) <= MAX_CHARS


def local_target(name: str, stats: SystemStats | None) -> TargetState:
    state = TargetState(name, "local", f"http://127.0.0.1:8188/{name}", endpoints=["system_stats", "queue"])
    state.set_up(True)
    if stats is not None:
        state.apply_system(stats, None)
    return state


def healthy_neighbour() -> TargetState:
    return local_target("healthy", parse_system_stats(load_json("system_stats.json")))


def target_lines(text: str, target: str) -> list[str]:
    return sorted(line for line in text.splitlines() if f'target="{target}"' in line)


def render_both(states: list[TargetState]) -> tuple[str, str]:
    """Text and OpenMetrics output, decoded strictly and accepted by both of prometheus_client's parsers."""
    daemon = DaemonInfo(reload_timestamp=NOW)
    text = bytes(metrics_body(states, daemon=daemon, openmetrics=False)).decode("utf-8")
    openmetrics = bytes(metrics_body(states, daemon=daemon, openmetrics=True)).decode("utf-8")
    list(parse_text(text))
    list(parse_openmetrics(openmetrics))
    return text, openmetrics


class TestParsers:
    def test_system_stats_strings_are_safe(self) -> None:
        """Every string of /system_stats (OS, versions, argv, device name and type) comes out sanitized."""
        stats = parse_system_stats(system_body())
        assert (stats.os, stats.comfyui_version, stats.python_version, stats.pytorch_version) == (HOSTILE_CLEAN,) * 4
        assert stats.argv == ("main.py", HOSTILE_CLEAN, "--listen", "127.0.0.1")
        assert (stats.devices[0].name, stats.devices[0].type) == (HOSTILE_CLEAN, HOSTILE_CLEAN)

    def test_20_mb_version_is_cut_and_counted(self) -> None:
        """A 20 MB comfyui_version keeps MAX_CHARS characters, ends in the ellipsis, and counts one cut each."""
        before = TRUNCATIONS[Cut.STRING]
        stats = parse_system_stats(system_body(text="9" * 20_000_000))
        assert stats.comfyui_version == "9" * (MAX_CHARS - 1) + ELLIPSIS
        # os, three versions, one argv entry, device name and type.
        assert TRUNCATIONS[Cut.STRING] == before + 7

    def test_100000_devices_keep_the_first_64_and_count_one_cut(self) -> None:
        """Devices beyond MAX_DEVICES are dropped (each would be four series) and the cut is counted."""
        before = TRUNCATIONS[Cut.DEVICES]
        stats = parse_system_stats(system_body(text="cuda", devices=100_000))
        assert [d.index for d in stats.devices] == list(range(MAX_DEVICES))
        assert TRUNCATIONS[Cut.DEVICES] == before + 1

    def test_340000_arguments_keep_the_first_64_and_count_one_cut(self) -> None:
        """A mebibyte of empty arguments: the target keeps MAX_ARGS of them, and one cut is counted."""
        body = system_body(text="cuda")
        body["system"]["argv"] = ["main.py", "--port", "8188", *[""] * 340_000, "--listen"]
        before = TRUNCATIONS[Cut.ARGV]
        stats = parse_system_stats(body)
        assert stats.argv == ("main.py", "--port", "8188", *[""] * (MAX_ARGS - 3))
        assert TRUNCATIONS[Cut.ARGV] == before + 1

    @pytest.mark.parametrize("parse", [parse_queue, parse_cloud_queue], ids=["local", "cloud"])
    def test_a_queue_of_a_million_entries_reads_the_first_and_counts_all(
            self, parse: Callable[[object], QueueSnapshot]) -> None:
        """Entries of /queue (and Comfy Cloud's /api/queue) beyond MAX_QUEUE_ITEMS are counted but never read (a
        target keeps what it read until its next poll); the counts, ages, stall tracking and the canary's busy
        check see the whole queue, and one cut is counted."""
        created = {"create_time": 1755684001000}
        body = {"queue_running": [[0, "r0", {}, ["9"], created]],
                "queue_pending": [[index, f"p{index}", {}, ["9"], created] for index in range(1_000_000)]}
        before = TRUNCATIONS[Cut.QUEUE_ITEMS]
        snapshot = parse(body)
        assert (len(snapshot.running), len(snapshot.pending)) == (1, MAX_QUEUE_ITEMS)
        assert (snapshot.running_count, snapshot.pending_count) == (1, 1_000_000)
        assert [item.prompt_id for item in snapshot.pending[:2]] == ["p0", "p1"]
        assert TRUNCATIONS[Cut.QUEUE_ITEMS] == before + 1
        view = QueueTracker(600, 4).observe(snapshot, NOW)
        assert (view.running, view.pending) == (1, 1_000_000)

    def test_queue_ids_are_safe(self) -> None:
        """Prompt and client ids of /queue come out sanitized and bounded."""
        body = load_json("queue_busy.json")
        body["queue_running"][0][1] = HOSTILE
        body["queue_running"][0][3]["client_id"] = "c" * 10_000
        item = parse_queue(body).running[0]
        assert item.prompt_id == HOSTILE_CLEAN
        assert item.client_id is not None and safe(item.client_id) and item.client_id.endswith(ELLIPSIS)

    def test_history_strings_are_safe(self) -> None:
        """Prompt id, exception type and node type of a /history entry come out sanitized and bounded."""
        entries = load_json("history_error_runtime.json")
        entry = next(iter(entries.values()))
        for event, data in entry["status"]["messages"]:
            if event == "execution_error":
                data["exception_type"], data["node_type"] = HOSTILE, "N" * 100_000
        parsed = parse_history({HOSTILE: entry})[0]
        assert parsed.prompt_id == HOSTILE_CLEAN
        assert parsed.exception_type == HOSTILE_CLEAN
        assert parsed.node_type is not None and safe(parsed.node_type)

    def test_jobs_strings_are_safe(self) -> None:
        """Job ids of /api/jobs come out sanitized."""
        page = parse_jobs({"jobs": [{"id": HOSTILE, "status": "completed"}]})
        assert page.jobs[0].id == HOSTILE_CLEAN

    def test_prompt_and_websocket_strings_are_safe(self) -> None:
        """The prompt id of a /prompt answer, and the top-level strings of a WebSocket event, are sanitized."""
        assert parse_prompt_accepted({"prompt_id": HOSTILE, "number": 1}).prompt_id == HOSTILE_CLEAN
        frame = json.dumps({"type": "execution_error", "data": {
            "prompt_id": HOSTILE, "node_type": HOSTILE, "exception_type": HOSTILE, "exception_message": HOSTILE}})
        event = parse_ws_text(frame)
        assert event.prompt_id == HOSTILE_CLEAN
        assert {key: event.data[key] for key in ("node_type", "exception_type", "exception_message")} == dict.fromkeys(
            ("node_type", "exception_type", "exception_message"), HOSTILE_CLEAN)

    def test_cloud_strings_are_safe(self) -> None:
        """Cloud tier and status (label values) and job ids come out sanitized."""
        status = parse_billing_status({"is_active": True, "has_funds": True, "subscription_tier": HOSTILE,
                                       "subscription_status": "\ud800active"})
        assert status.tier is not None and safe(status.tier) and status.tier.startswith("cuda:0 \ufffd")
        assert status.subscription_status == "\ufffdactive"
        page = parse_jobs_list({"jobs": [{"id": "job-\ud800", "status": "\x1bcompleted", "create_time": 1}],
                                "pagination": {}})
        assert (page.jobs[0].id, page.jobs[0].status) == ("job-\ufffd", " completed")


class TestExporter:
    def test_hostile_target_does_not_blind_the_fleet(self) -> None:
        """A target that sent surrogates, escapes and 100,000 devices renders, bounded; its neighbour is intact."""
        hostile = local_target("hostile", parse_system_stats(system_body(devices=100_000)))
        alone, _ = render_both([healthy_neighbour()])
        text, _ = render_both([hostile, healthy_neighbour()])
        assert target_lines(text, "healthy") == target_lines(alone, "healthy")
        assert len([line for line in text.splitlines() if line.startswith("comfyui_device_vram_total_bytes{")]
                   ) == MAX_DEVICES + 1
        assert 'comfyui_up{target="hostile"} 1.0' in text.splitlines()

    @pytest.mark.parametrize("openmetrics", [False, True])
    def test_encode_failure_costs_only_that_target(self, openmetrics: bool) -> None:
        """A target whose strings bypassed the parse layer becomes comfyui_up 0 and one counted encode failure;
        the other targets' lines are unaffected."""
        stats = parse_system_stats(load_json("system_stats.json"))
        broken = SystemStats(os="posix", comfyui_version="0.3.64 \ud800", python_version="3.11.7",
                             pytorch_version="2.14.1", ram_total=1, ram_free=1, embedded_python=False, argv=(),
                             devices=(Device("cuda:0 \udfff", "cuda", 0, 1, 1, 1, 1),))
        bad = local_target("bad", broken)
        good = local_target("good", stats)
        daemon = DaemonInfo(reload_timestamp=NOW)
        alone = bytes(metrics_body([good], daemon=daemon, openmetrics=openmetrics)).decode("utf-8")
        before = ENCODE_FAILURES.total
        body = bytes(metrics_body([bad, good], daemon=daemon, openmetrics=openmetrics)).decode("utf-8")
        assert ENCODE_FAILURES.total == before + 1
        assert target_lines(body, "bad") == ['comfyui_up{target="bad"} 0.0']
        assert target_lines(body, "good") == target_lines(alone, "good")
        assert f"comfywatch_encode_failures_total {before + 1}" in body.splitlines()
        parse = parse_openmetrics if openmetrics else parse_text
        list(parse(body))
        # Encoded once per change of the target's values, like any target: a scrape of the same values does not
        # count again.
        bytes(metrics_body([bad, good], daemon=daemon, openmetrics=openmetrics))
        assert ENCODE_FAILURES.total == before + 1

    def test_encode_failure_in_a_probe(self) -> None:
        """/probe output (no target label, no daemon families) also degrades to comfyui_up 0."""
        broken = SystemStats(os="\ud800", comfyui_version="x", python_version="x", pytorch_version="x", ram_total=1,
                             ram_free=1, embedded_python=None, argv=(), devices=())
        text = bytes(metrics_body([local_target("probe", broken)], daemon=None, openmetrics=False,
                                  with_target=False)).decode("utf-8")
        assert [line for line in text.splitlines() if not line.startswith("#")] == ["comfyui_up 0.0"]

    def test_truncations_are_exported(self) -> None:
        """comfywatch_truncations_total shows the cuts by what was cut, every kind from 0."""
        parse_system_stats(system_body(text="v" * 1000, devices=MAX_DEVICES + 1))
        text, _ = render_both([healthy_neighbour()])
        for cut in Cut:
            assert f'comfywatch_truncations_total{{what="{cut}"}} {TRUNCATIONS[cut]}' in text.splitlines()
        assert TRUNCATIONS[Cut.DEVICES] >= 1


#: Any string, of any size: short ones drawn from every code point, long ones a code point repeated.
any_size_text = st.text(ANY_CHAR, max_size=300) | st.builds(
    lambda char, count: char * count, ANY_CHAR, st.integers(min_value=0, max_value=200_000))


@FUZZ
@given(
    fields=st.fixed_dictionaries({
        key: any_size_text for key in ("os", "comfyui_version", "python_version", "pytorch_version", "argv",
                                       "name", "type", "prompt_id", "client_id", "exception_type", "node_type",
                                       "tier", "status")}),
    devices=st.integers(min_value=0, max_value=MAX_DEVICES + 3),
)
def test_any_server_string_renders_valid_exposition(fields: dict[str, str], devices: int) -> None:
    """For any Unicode string (surrogates included) of any size in any server field that reaches a label or a
    state: parse -> state -> exporter output is valid UTF-8 that both prometheus_client parsers accept, every
    label value is bounded, and the healthy neighbour's lines are unchanged."""
    body = system_body(devices=0)
    system = body["system"]
    for key in ("os", "comfyui_version", "python_version", "pytorch_version"):
        system[key] = fields[key]
    system["argv"] = ["main.py", fields["argv"]]
    device = load_json("system_stats.json")["devices"][0]
    body["devices"] = [{**device, "name": fields["name"], "type": fields["type"], "index": i} for i in range(devices)]
    state = local_target("hostile", parse_system_stats(body))

    queue = load_json("queue_busy.json")
    queue["queue_running"][0][1] = fields["prompt_id"]
    queue["queue_running"][0][3]["client_id"] = fields["client_id"]
    tracker = QueueTracker(600, 4)
    state.apply_queue(tracker.observe(parse_queue(queue), NOW))

    entry = copy.deepcopy(next(iter(load_json("history_error_runtime.json").values())))
    for event, data in entry["status"]["messages"]:
        if event == "execution_error":
            data["exception_type"], data["node_type"] = fields["exception_type"], fields["node_type"]
    for finished in parse_history({fields["prompt_id"]: entry}):
        state.count_finished_job(finished.failure_reason, finished.server_seconds)

    cloud = TargetState("cloud", "cloud", "https://cloud.comfy.org", endpoints=["billing_status"])
    billing = parse_billing_status({"is_active": True, "has_funds": True, "subscription_tier": fields["tier"],
                                    "subscription_status": fields["status"]})
    assert cloud.cloud is not None
    cloud.cloud.subscription_tier, cloud.cloud.subscription_status = billing.tier, billing.subscription_status

    alone, _ = render_both([healthy_neighbour()])
    before = ENCODE_FAILURES.total
    text, openmetrics = render_both([state, cloud, healthy_neighbour()])
    assert ENCODE_FAILURES.total == before
    assert target_lines(text, "healthy") == target_lines(alone, "healthy")
    for family in parse_openmetrics(openmetrics):
        for sample in family.samples:
            assert all(len(value) <= MAX_CHARS for value in sample.labels.values()), sample
