"""Tests for the local-API parsers (comfywatch.parse): every recorded fixture of their endpoints, by value.

The fixtures come from a real ComfyUI 0.3.64 (``tests/fixtures/comfyui``); ``/api/jobs`` bodies are synthetic
(0.3.64 answers 404) and follow the newer servers' job fields (docs/architecture.md, "Facts about ComfyUI").
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from comfywatch.errors import ParseError, Reason
from comfywatch.parse import shape
from comfywatch.parse.history import HistoryEntry, Outcome, parse_history, parse_history_entry
from comfywatch.parse.jobs import Job, parse_jobs, to_ms
from comfywatch.parse.prompt import MAX_FRAME_CHARS, parse_prompt_accepted, parse_ws_text, ws_event
from comfywatch.parse.queue import parse_queue, parse_queue_remaining
from comfywatch.parse.system import Device, SystemStats, parse_system_stats
from comfywatch.parse.text import ELLIPSIS, MAX_CHARS, sanitize
from tests.fixtures import FIXTURES, load_json, load_jsonl


def _names(pattern: str) -> list[str]:
    return sorted(p.name for p in FIXTURES.glob(pattern))


SYSTEM_FIXTURES = [
    *_names("system_stats*.json"),
    "alt_tls_cors_multiuser_system_stats.json",
    "origin_match_get_200.json",
]
QUEUE_FIXTURES = [*_names("queue_*.json"), "alt_cors_get_with_foreign_origin.json"]
HISTORY_FIXTURES = [*_names("history_*.json"), "alt_history_save_disable_metadata.json"]
PROMPT_OK_FIXTURES = [*_names("prompt_ok_*.json"), "alt_prompt_ok_no_auth_needed.json"]
PROMPT_ERROR_FIXTURES = _names("prompt_error_*.json")
WS_FIXTURES = _names("ws_*.jsonl")

# Prompt ids of the recorded runs (they correlate across files, see the fixtures' README).
PREVIEW = "45cff707-f375-43ec-a1ee-dd35544ef20f"
RUNTIME_ERROR = "854dccab-4578-488d-bb19-6f91cad0be46"
A_INTERRUPTED = "a6cc3698-5c2e-428d-a2a9-c381ae8735a9"
B_DELETED = "b8624bf2-0bda-4c8e-965c-4cf78a5cb850"
C_AFTER = "da253e1e-97ed-4109-96a7-a557efd4f75b"
D_INTERRUPTED = "07c24684-ad9c-4eb6-8540-0e8080d59288"
E_CLEARED = "fa14d511-0922-464a-b301-63194364c4ea"
PHASE_D_CLIENT = "fc957ad9e57f4f24b878811bb12cd670"
CANARY_CLIENT = "194a3c4f2ef740ff9416684c63d456d1"


def _one(name: str) -> HistoryEntry:
    entries = parse_history(load_json(name))
    assert len(entries) == 1
    return entries[0]


def _history_entry(messages: list[Any], status_str: str | None = "error", **extra: Any) -> dict[str, Any]:
    return {
        "prompt": [0, "p", {}, {"client_id": "c"}, []],
        "outputs": {},
        "status": {"status_str": status_str, "completed": status_str == "success", "messages": messages},
        **extra,
    }


def _error_message(exception_type: Any, exception_message: Any, **extra: Any) -> list[Any]:
    data = {
        "prompt_id": "p",
        "node_id": "3",
        "node_type": "KSampler",
        "exception_type": exception_type,
        "exception_message": exception_message,
        "traceback": [],
        "timestamp": 2_000,
        **extra,
    }
    return ["execution_error", data]


class TestFixtureCoverage:
    def test_every_endpoint_fixture_is_listed(self) -> None:
        """The parametrised lists pick up every recorded file of these endpoints (none silently skipped)."""
        assert len(SYSTEM_FIXTURES) == 4
        assert len(QUEUE_FIXTURES) == 8
        assert len(HISTORY_FIXTURES) == 23
        assert len(PROMPT_OK_FIXTURES) == 14
        assert len(WS_FIXTURES) == 18


class TestSystemStats:
    @pytest.mark.parametrize("name", SYSTEM_FIXTURES)
    def test_every_recording_parses_to_the_cpu_server(self, name: str) -> None:
        """Every recorded /system_stats body describes the 0.3.64 CPU server that produced it."""
        stats = parse_system_stats(load_json(name))
        assert stats.comfyui_version == "0.3.64"
        assert stats.os == "posix"
        assert stats.python_version.startswith("3.11.7 ")
        assert stats.pytorch_version == "2.14.1+cu130"
        assert stats.embedded_python is False
        assert stats.ram_total == 25276510208
        assert 0 < stats.ram_free <= stats.ram_total
        (device,) = stats.devices
        assert (device.name, device.type, device.index) == ("cpu", "cpu", None)
        assert device.vram_total == stats.ram_total
        assert device.vram_free == stats.ram_free
        assert device.vram_meaningful is False

    def test_main_recording_values(self) -> None:
        """system_stats.json: exact RAM numbers and the command line of the main instance."""
        stats = parse_system_stats(load_json("system_stats.json"))
        assert stats.ram_free == 24201641984
        assert stats.argv == ("main.py", "--cpu", "--listen", "127.0.0.1", "--port", "8188")
        assert stats.devices[0].torch_vram_free == 24201641984
        assert stats.listens_on_all_interfaces is False

    def test_alt_instance_argv(self) -> None:
        """The TLS/CORS/multi-user instance's flags come through in argv, still loopback-only."""
        stats = parse_system_stats(load_json("alt_tls_cors_multiuser_system_stats.json"))
        assert "--tls-keyfile" in stats.argv
        assert stats.argv[stats.argv.index("--port") + 1] == "8189"
        assert stats.listens_on_all_interfaces is False

    def test_api_prefix_recording_matches_plain_route(self) -> None:
        """/api/system_stats has the same shape as /system_stats (only free RAM moved)."""
        plain = parse_system_stats(load_json("system_stats.json"))
        prefixed = parse_system_stats(load_json("system_stats_api_prefix.json"))
        assert prefixed.argv == plain.argv
        assert prefixed.comfyui_version == plain.comfyui_version

    def test_strings_a_fleet_repeats_are_kept_once(self) -> None:
        """Two servers answering the same build, devices and command line keep one copy of each string."""
        text = json.dumps(load_json("system_stats.json"))
        first, second = parse_system_stats(json.loads(text)), parse_system_stats(json.loads(text))
        for field in ("os", "comfyui_version", "python_version", "pytorch_version"):
            assert getattr(first, field) is getattr(second, field), field
        assert all(a is b for a, b in zip(first.argv, second.argv, strict=True))
        assert first.devices[0].name is second.devices[0].name
        assert first.devices[0].type is second.devices[0].type

    def test_new_strings_on_every_poll_keep_the_shared_table_bounded(self) -> None:
        """A server answering a new version on every poll cannot grow the table of shared strings for good."""
        body = load_json("system_stats.json")
        for poll in range(shape._MAX_SHARED + 10):
            body["system"]["comfyui_version"] = f"0.3.{poll}"
            parse_system_stats(body)
            assert len(shape._SHARED) <= shape._MAX_SHARED

    def test_cuda_device(self) -> None:
        """A CUDA device (shape from comfy/model_management.py) keeps its index and counts VRAM."""
        body = load_json("system_stats.json")
        body["devices"] = [
            {
                "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                "type": "cuda",
                "index": 0,
                "vram_total": 25393692672,
                "vram_free": 24000000000,
                "torch_vram_total": 1073741824,
                "torch_vram_free": 536870912,
            }
        ]
        (device,) = parse_system_stats(body).devices
        assert device == Device(
            "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
            "cuda",
            0,
            25393692672,
            24000000000,
            1073741824,
            536870912,
        )
        assert device.vram_meaningful is True

    @pytest.mark.parametrize("kind", ["cpu", "directml", "privateuseone"])
    def test_fake_vram_device_types(self, kind: str) -> None:
        """CPU and DirectML devices report RAM or invented numbers as VRAM."""
        assert Device("x", kind, None, 1, 1, 1, 1).vram_meaningful is False

    def test_optional_fields_absent(self) -> None:
        """argv and embedded_python are optional; vram numbers may be null."""
        body = load_json("system_stats.json")
        del body["system"]["argv"], body["system"]["embedded_python"]
        body["devices"][0]["vram_total"] = None
        stats = parse_system_stats(body)
        assert stats.argv == ()
        assert stats.embedded_python is None
        assert stats.devices[0].vram_total is None

    def test_integral_float_accepted_and_big_int_exact(self) -> None:
        """1.0 counts as an integer, and byte counts above 2**53 stay exact."""
        body = load_json("system_stats.json")
        body["system"]["ram_total"] = 2**60 + 1
        body["system"]["ram_free"] = 1024.0
        stats = parse_system_stats(body)
        assert stats.ram_total == 2**60 + 1
        assert stats.ram_free == 1024

    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            (lambda b: b.pop("system"), "system"),
            (lambda b: b.pop("devices"), "devices"),
            (lambda b: b["system"].update(ram_total="25 GB"), "system.ram_total"),
            (lambda b: b["system"].update(ram_total=True), "system.ram_total"),
            (lambda b: b["system"].update(ram_free=1.5), "system.ram_free"),
            (lambda b: b["system"].update(ram_free=10**400), "system.ram_free"),
            (lambda b: b["system"].update(os=None), "system.os"),
            (lambda b: b["system"].update(argv="main.py"), "system.argv"),
            (lambda b: b["system"]["argv"].append(7), "system.argv[6]"),
            (lambda b: b["system"].update(embedded_python="no"), "system.embedded_python"),
            (lambda b: b["devices"][0].update(index="0"), "devices[0].index"),
            (lambda b: b["devices"][0].update(vram_free=float("nan")), "devices[0].vram_free"),
            (lambda b: b["devices"].append(None), "devices[1]"),
        ],
    )
    def test_wrong_shape_names_the_path(self, mutate: Any, path: str) -> None:
        """A wrong shape raises ParseError whose message starts with the JSON path."""
        body = load_json("system_stats.json")
        mutate(body)
        with pytest.raises(ParseError) as info:
            parse_system_stats(body)
        assert str(info.value).startswith(f"{path}:")

    @pytest.mark.parametrize("body", [None, [], "system_stats", 3])
    def test_not_an_object(self, body: Any) -> None:
        """Anything but a JSON object at the top is a ParseError for ``$``."""
        with pytest.raises(ParseError, match=r"^\$: expected object"):
            parse_system_stats(body)

    def test_error_message_never_contains_values(self) -> None:
        """ParseError names the path and the type, never the offending value (it may be a secret)."""
        body = load_json("system_stats.json")
        body["system"]["os"] = ["hunter2-secret"]
        with pytest.raises(ParseError) as info:
            parse_system_stats(body)
        assert "hunter2" not in str(info.value)
        assert str(info.value) == "system.os: expected string, got list"


class TestListensOnAllInterfaces:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["main.py"], False),
            (["main.py", "--listen", "127.0.0.1"], False),
            (["main.py", "--listen", "192.168.1.5"], False),
            (["main.py", "--listen"], True),
            (["main.py", "--listen", "--port", "8188"], True),
            (["main.py", "--listen", "0.0.0.0"], True),
            (["main.py", "--listen", "::"], True),
            (["main.py", "--listen", "127.0.0.1,0.0.0.0"], True),
            (["main.py", "--listen=0.0.0.0"], True),
            (["main.py", "--listen=127.0.0.1"], False),
            (["main.py", "--listen="], True),
        ],
    )
    def test_bind_address_from_argv(self, argv: list[str], expected: bool) -> None:
        """Bare --listen means 0.0.0.0,:: (cli_args.py); wildcard addresses are network-reachable."""
        stats = SystemStats("posix", "0.3.64", "3.11", "2", 1, 1, False, tuple(argv), ())
        assert stats.listens_on_all_interfaces is expected


class TestQueue:
    @pytest.mark.parametrize("name", QUEUE_FIXTURES)
    def test_every_recording_parses(self, name: str) -> None:
        """Every /queue recording parses; running never holds more than the one worker's prompt."""
        snapshot = parse_queue(load_json(name))
        assert len(snapshot.running) <= 1
        for item in (*snapshot.running, *snapshot.pending):
            assert item.client_id in {None, PHASE_D_CLIENT}
            assert item.create_time_ms is None  # 0.3.64 puts no timestamp in the queue

    @pytest.mark.parametrize(
        "name", ["queue_idle.json", "queue_idle_after.json", "alt_cors_get_with_foreign_origin.json"]
    )
    def test_idle(self, name: str) -> None:
        """An idle server has nothing running and nothing pending."""
        snapshot = parse_queue(load_json(name))
        assert snapshot.running == () and snapshot.pending == ()

    def test_busy(self) -> None:
        """queue_busy.json: A running (number 30), B and C pending, all from the phase-D client."""
        snapshot = parse_queue(load_json("queue_busy.json"))
        (running,) = snapshot.running
        assert (running.number, running.prompt_id, running.client_id) == (30.0, A_INTERRUPTED, PHASE_D_CLIENT)
        assert [(i.number, i.prompt_id) for i in snapshot.pending] == [(31.0, B_DELETED), (32.0, C_AFTER)]

    def test_after_delete_and_clear(self) -> None:
        """Deleting B leaves C pending; clearing drops E but leaves the running D."""
        after_delete = parse_queue(load_json("queue_after_delete.json"))
        assert [i.prompt_id for i in after_delete.pending] == [C_AFTER]
        assert parse_queue(load_json("queue_after_seed_claim_form.json")) == after_delete
        busy_2 = parse_queue(load_json("queue_busy_2.json"))
        assert [i.prompt_id for i in busy_2.running] == [D_INTERRUPTED]
        assert [i.prompt_id for i in busy_2.pending] == [E_CLEARED]
        cleared = parse_queue(load_json("queue_after_clear.json"))
        assert [i.prompt_id for i in cleared.running] == [D_INTERRUPTED]
        assert cleared.pending == ()

    def test_graph_is_not_kept(self) -> None:
        """The prompt graph (user content, possibly megabytes) is dropped from the snapshot."""
        snapshot = parse_queue(load_json("queue_busy.json"))
        assert "after interrupt" not in repr(snapshot)
        assert "lanczos" not in repr(snapshot)

    def test_newer_local_create_time_in_extra_data(self) -> None:
        """Newer ComfyUI puts extra_data.create_time (ms) at index 3."""
        body = {
            "queue_running": [],
            "queue_pending": [[1, "p", {}, {"client_id": "c", "create_time": 1795641105260}, ["2"]]],
        }
        (item,) = parse_queue(body).pending
        assert (item.client_id, item.create_time_ms) == ("c", 1795641105260)

    def test_cloud_create_time_at_index_4(self) -> None:
        """Comfy Cloud puts output ids at [3] and {"create_time"} at [4]."""
        body = {"queue_running": [[1, "4f1c", {}, ["2"], {"create_time": 1755684000123}]], "queue_pending": []}
        (item,) = parse_queue(body).running
        assert (item.prompt_id, item.client_id, item.create_time_ms) == ("4f1c", None, 1755684000123)

    @pytest.mark.parametrize("created", [float("nan"), float("inf"), 10**400, "1755684000123", True, None])
    def test_unusable_create_time_is_absent(self, created: Any) -> None:
        """NaN, Infinity, strings and booleans as create_time give no timestamp rather than an error."""
        body = {"queue_running": [[1, "p", {}, {"create_time": created}]], "queue_pending": []}
        assert parse_queue(body).running[0].create_time_ms is None

    def test_two_element_item_is_enough(self) -> None:
        """Only number and prompt_id are required in an item."""
        (item,) = parse_queue({"queue_running": [[7, "p"]], "queue_pending": []}).running
        assert (item.number, item.prompt_id, item.client_id) == (7.0, "p", None)

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"queue_pending": []}, "queue_running"),
            ({"queue_running": []}, "queue_pending"),
            ({"queue_running": [["p"]], "queue_pending": []}, "queue_running[0]"),
            ({"queue_running": [{"id": "p"}], "queue_pending": []}, "queue_running[0]"),
            ({"queue_running": [], "queue_pending": [["1", "p"]]}, "queue_pending[0][0]"),
            ({"queue_running": [], "queue_pending": [[1, 2]]}, "queue_pending[0][1]"),
        ],
    )
    def test_wrong_shape(self, body: Any, path: str) -> None:
        """A malformed queue raises ParseError naming the item."""
        with pytest.raises(ParseError) as info:
            parse_queue(body)
        assert str(info.value).startswith(f"{path}:")


class TestQueueRemaining:
    @pytest.mark.parametrize(("name", "expected"), [("prompt_get_idle.json", 0), ("prompt_get_busy.json", 3)])
    def test_recordings(self, name: str, expected: int) -> None:
        """GET /prompt gives pending + running (3 while A runs with B and C queued)."""
        assert parse_queue_remaining(load_json(name)) == expected

    @pytest.mark.parametrize("body", [{}, {"exec_info": {}}, {"exec_info": {"queue_remaining": "3"}}, {"exec_info": 3}])
    def test_wrong_shape(self, body: Any) -> None:
        """A missing or non-numeric queue_remaining is a ParseError."""
        with pytest.raises(ParseError):
            parse_queue_remaining(body)


class TestHistoryFixtures:
    EMPTY = (
        "history_empty.json",
        "history_unknown_id.json",
        "history_while_running.json",
        "history_after_clear.json",
        "history_after_delete.json",
        "history_deleted_from_queue_never_ran.json",
    )

    @pytest.mark.parametrize("name", HISTORY_FIXTURES)
    def test_every_recording_parses_consistently(self, name: str) -> None:
        """Every /history recording parses; each entry is classified and keyed by its own prompt id."""
        body = load_json(name)
        entries = parse_history(body)
        assert [e.prompt_id for e in entries] == list(body)
        for entry in entries:
            assert entry.outcome is not Outcome.UNKNOWN
            assert (entry.failure_reason is None) == (entry.outcome is Outcome.SUCCESS)
            assert entry.server_seconds is not None and 0 <= entry.server_seconds < 10

    @pytest.mark.parametrize("name", EMPTY)
    def test_unknown_unfinished_or_cleared_is_empty(self, name: str) -> None:
        """``{}`` (unknown id, still running, deleted, cleared) parses to no entries."""
        assert parse_history(load_json(name)) == []

    def test_success_preview(self) -> None:
        """history_success_preview.json: success, server time from the two timestamps, temp image output."""
        entry = _one("history_success_preview.json")
        assert entry.prompt_id == PREVIEW
        assert (entry.outcome, entry.failure_reason) == (Outcome.SUCCESS, None)
        assert (entry.start_ms, entry.end_ms) == (1795641031630, 1795641031637)
        assert entry.server_seconds == pytest.approx(0.007)
        assert entry.client_id == CANARY_CLIENT
        assert entry.outputs["2"]["images"][0] == {
            "filename": "ComfyUI_temp_xqydl_00001_.png",
            "subfolder": "",
            "type": "temp",
        }
        assert (entry.exception_type, entry.node_type) == (None, None)

    def test_interrupted(self) -> None:
        """history_interrupted.json: status_str "error", but the last message makes it INTERRUPTED."""
        entry = _one("history_interrupted.json")
        assert (entry.prompt_id, entry.outcome, entry.failure_reason) == (
            A_INTERRUPTED,
            Outcome.FAILED,
            Reason.INTERRUPTED,
        )
        assert entry.node_type == "ImageScale"
        assert entry.exception_type is None
        assert entry.server_seconds == pytest.approx((1795641109366 - 1795641105260) / 1000)
        assert entry.outputs == {}

    def test_interrupted_global(self) -> None:
        """A global /interrupt gives the same INTERRUPTED classification."""
        entry = _one("history_interrupted_global.json")
        assert (entry.prompt_id, entry.failure_reason) == (D_INTERRUPTED, Reason.INTERRUPTED)
        assert entry.server_seconds == pytest.approx(3.582)

    def test_runtime_error(self) -> None:
        """history_error_runtime.json: EXECUTION_ERROR with the node and exception type, not the message."""
        entry = _one("history_error_runtime.json")
        assert (entry.prompt_id, entry.outcome, entry.failure_reason) == (
            RUNTIME_ERROR,
            Outcome.FAILED,
            Reason.EXECUTION_ERROR,
        )
        assert entry.exception_type == "re.error"
        assert entry.node_type == "RegexReplace"
        assert (entry.start_ms, entry.end_ms) == (1795641033802, 1795641033807)
        assert entry.server_seconds == pytest.approx(0.005)
        assert "unterminated subpattern" not in repr(entry)

    def test_extra_data_sensitive_stripped(self) -> None:
        """The server strips api_key_comfy_org from extra_data; the parser keeps only client_id from it."""
        raw = (FIXTURES / "history_extra_data_sensitive_stripped.json").read_text(encoding="utf-8")
        assert "SECRET-SHOULD-BE-STRIPPED" not in raw and "api_key_comfy_org" not in raw
        entry = _one("history_extra_data_sensitive_stripped.json")
        assert entry.client_id == CANARY_CLIENT
        assert entry.outputs == {"2": {"text": ["extra"]}}
        assert "canary" not in repr(entry)  # the caller's own extra_data keys are not kept either

    def test_all(self) -> None:
        """history_all.json: 18 entries in insertion order, 15 successes, 1 runtime error, 2 interrupts."""
        entries = parse_history(load_json("history_all.json"))
        assert len(entries) == 18
        assert (entries[0].prompt_id, entries[-1].prompt_id) == (PREVIEW, D_INTERRUPTED)
        failures = {e.prompt_id: e.failure_reason for e in entries if e.outcome is Outcome.FAILED}
        assert failures == {
            RUNTIME_ERROR: Reason.EXECUTION_ERROR,
            A_INTERRUPTED: Reason.INTERRUPTED,
            D_INTERRUPTED: Reason.INTERRUPTED,
        }
        by_id = {e.prompt_id: e for e in entries}
        assert by_id["22f91d78-4708-45e6-8f27-3b847cd0f850"].client_id is None  # posted without client_id
        assert by_id["66f37a8f-e8ad-4749-829b-dde5fada4ac3"].server_seconds == pytest.approx(5.554)

    def test_windows(self) -> None:
        """max_items=2 gives the last two entries; max_items=1&offset=0 the first one."""
        assert [(e.prompt_id, e.outcome) for e in parse_history(load_json("history_max_items_2.json"))] == [
            (C_AFTER, Outcome.SUCCESS),
            (D_INTERRUPTED, Outcome.FAILED),
        ]
        assert [e.prompt_id for e in parse_history(load_json("history_offset_max_items.json"))] == [PREVIEW]

    @pytest.mark.parametrize(
        ("name", "prompt_id", "output_node"),
        [
            ("history_custom_prompt_id.json", "comfywatch-canary-0001", "2"),
            ("history_partial_with_node_errors.json", "2a14a8df-e444-4153-af2e-741f152077b9", "2"),
            ("history_success_preview_cached.json", "4e26e3ae-46e7-4bdf-a9ae-93c19c675bc0", "2"),
            ("history_success_save.json", "9d4e3132-2134-4acb-8ff7-bcae8b12990b", "3"),
            ("history_success_text.json", "eb7221e8-30c4-4c39-8ea0-b1cb5d29aafd", "2"),
            ("alt_history_save_disable_metadata.json", "01abe9ef-e005-448d-8876-d2e465924326", "3"),
        ],
    )
    def test_successes_with_outputs(self, name: str, prompt_id: str, output_node: str) -> None:
        """Successful canaries keep their prompt id (custom ids too) and their output node's ui dict."""
        entry = _one(name)
        assert (entry.prompt_id, entry.outcome, entry.failure_reason) == (prompt_id, Outcome.SUCCESS, None)
        assert list(entry.outputs) == [output_node]

    def test_websocket_image_has_no_outputs(self) -> None:
        """SaveImageWebsocket sends its image over the socket: success with empty outputs."""
        entry = _one("history_success_wsimage.json")
        assert (entry.outcome, entry.outputs) == (Outcome.SUCCESS, {})

    def test_text_output_value(self) -> None:
        """The PreviewAny canary's echoed text is in outputs."""
        assert _one("history_success_text.json").outputs["2"] == {"text": ["comfywatch canary 1"]}

    def test_save_output_type(self) -> None:
        """SaveImage writes to output/ (type "output")."""
        assert _one("history_success_save.json").outputs["3"]["images"][0]["type"] == "output"


class TestHistoryClassification:
    @pytest.mark.parametrize(
        ("exception_type", "message"),
        [
            ("torch.OutOfMemoryError", "Allocation on device"),
            ("torch.cuda.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
            ("RuntimeError", "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 8.00 GiB total capacity)"),
            ("RuntimeError", "CUDA error: out of memory"),
            ("OOMError", "worker ran out of memory"),
        ],
    )
    def test_oom(self, exception_type: str, message: str) -> None:
        """Out-of-memory failures are Reason.OOM, whether the type or only the message says so."""
        entry = parse_history_entry("p", _history_entry([_error_message(exception_type, message)]))
        assert (entry.outcome, entry.failure_reason, entry.exception_type) == (
            Outcome.FAILED,
            Reason.OOM,
            exception_type,
        )

    def test_cloud_billing_error_is_payment(self) -> None:
        """Comfy Cloud's InsufficientFundsError during execution is a payment failure."""
        entry = parse_history_entry("p", _history_entry([_error_message("InsufficientFundsError", "no credits")]))
        assert entry.failure_reason is Reason.PAYMENT

    def test_error_without_terminal_message(self) -> None:
        """status_str "error" with no error/interrupt message still counts as an execution error."""
        entry = parse_history_entry("p", _history_entry([["execution_start", {"timestamp": 5}]]))
        assert (entry.outcome, entry.failure_reason) == (Outcome.FAILED, Reason.EXECUTION_ERROR)
        assert entry.server_seconds is None

    def test_success_without_messages(self) -> None:
        """status_str "success" and no messages: success with unknown duration."""
        entry = parse_history_entry("p", _history_entry([], status_str="success"))
        assert (entry.outcome, entry.server_seconds) == (Outcome.SUCCESS, None)

    def test_unknown_status(self) -> None:
        """Neither a terminal message nor a known status_str: UNKNOWN, no reason invented."""
        entry = parse_history_entry("p", _history_entry([], status_str=None))
        assert (entry.outcome, entry.failure_reason) == (Outcome.UNKNOWN, None)

    def test_an_entry_without_a_verdict_yet_is_not_finished(self) -> None:
        """``completed`` false with neither a terminal message nor a terminal status_str (an entry written when
        the prompt started) is not finished; one marked ``completed`` is, even without a verdict."""
        started = [["execution_start", {"prompt_id": "p", "timestamp": 5}]]
        running = parse_history_entry("p", _history_entry(started, status_str=None))
        assert (running.finished, running.outcome, running.failure_reason) == (False, Outcome.UNKNOWN, None)
        body = _history_entry(started, status_str=None)
        body["status"]["completed"] = True
        assert parse_history_entry("p", body).finished is True

    @pytest.mark.parametrize("name", HISTORY_FIXTURES)
    def test_every_recorded_entry_is_finished(self, name: str) -> None:
        """Every recorded entry is finished, failures included: ComfyUI writes them with ``completed`` false."""
        assert all(entry.finished for entry in parse_history(load_json(name)))

    def test_clock_going_backwards(self) -> None:
        """An end before the start (clock step) gives no duration rather than a negative one."""
        messages = [["execution_start", {"timestamp": 5000}], ["execution_success", {"timestamp": 4000}]]
        assert parse_history_entry("p", _history_entry(messages, "success")).server_seconds is None

    @pytest.mark.parametrize(
        "timestamp", [float("nan"), float("inf"), 10**400, -(10**400), "1795641031630", True, None]
    )
    def test_unusable_timestamps(self, timestamp: Any) -> None:
        """Non-numeric or non-finite timestamps are ignored, never an exception."""
        messages = [["execution_start", {"timestamp": timestamp}], ["execution_success", {"timestamp": 9}]]
        entry = parse_history_entry("p", _history_entry(messages, "success"))
        assert (entry.start_ms, entry.end_ms, entry.server_seconds) == (None, 9, None)

    def test_long_strings_truncated(self) -> None:
        """exception_type and node_type are bounded to MAX_CHARS characters, the cut marked."""
        message = _error_message("E" * 5000, "m", node_type="N" * 5000)
        entry = parse_history_entry("p", _history_entry([message]))
        assert entry.exception_type == "E" * (MAX_CHARS - 1) + ELLIPSIS
        assert entry.node_type == "N" * (MAX_CHARS - 1) + ELLIPSIS

    def test_malformed_messages_skipped(self) -> None:
        """Messages that are not [event, data] pairs, or carry non-object data, are skipped safely."""
        messages = [
            ["execution_start"],
            ["a", {}, "extra"],
            ["execution_start", "not a dict"],
            ["execution_success", {"timestamp": 3}],
        ]
        entry = parse_history_entry("p", _history_entry(messages, "success"))
        assert (entry.outcome, entry.start_ms, entry.end_ms) == (Outcome.SUCCESS, None, 3)

    def test_client_id_needs_extra_data_object(self) -> None:
        """client_id comes from prompt[3] only when that is an object holding a string."""
        body = _history_entry([], "success")
        body["prompt"] = [0, "p", {}, ["not", "extra"], []]
        assert parse_history_entry("p", body).client_id is None
        body["prompt"] = [0, "p", {}, {"client_id": 5}, []]
        assert parse_history_entry("p", body).client_id is None
        del body["prompt"]
        assert parse_history_entry("p", body).client_id is None

    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            (lambda e: e.pop("status"), "$.status"),
            (lambda e: e["status"].pop("completed"), "$.status.completed"),
            (lambda e: e["status"].update(status_str=3), "$.status.status_str"),
            (lambda e: e["status"].update(messages={}), "$.status.messages"),
            (lambda e: e["status"]["messages"].append("execution_start"), "$.status.messages[0]"),
            (lambda e: e["status"]["messages"].append([7, {}]), "$.status.messages[0][0]"),
            (lambda e: e.update(outputs=[]), "$.outputs"),
        ],
    )
    def test_wrong_shape(self, mutate: Any, path: str) -> None:
        """A malformed entry raises ParseError naming the JSON path inside it."""
        entry = _history_entry([], "success")
        mutate(entry)
        with pytest.raises(ParseError) as info:
            parse_history_entry("p", entry)
        assert str(info.value).startswith(f"{path}:")

    def test_path_names_the_prompt_id(self) -> None:
        """In a whole /history body the path starts with the entry's prompt id."""
        with pytest.raises(ParseError, match=r"^\$\['bad'\]: expected object"):
            parse_history({"bad": []})

    def test_top_level_not_object(self) -> None:
        """A /history body that is not an object is a ParseError."""
        with pytest.raises(ParseError):
            parse_history([])


def _job(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "j1",
        "status": "completed",
        "priority": 0,
        "create_time": 1795641031000,
        "execution_start_time": 1795641031630,
        "execution_end_time": 1795641031637,
        "execution_error": None,
        "outputs_count": 1,
        "preview_output": {"filename": "x.png", "subfolder": "", "type": "temp"},
        "workflow_id": None,
    }
    base.update(fields)
    return base


class TestJobs:
    def test_completed_job(self) -> None:
        """A completed job has its three timestamps, server time, and no failure."""
        page = parse_jobs({"jobs": [_job()], "pagination": {"offset": 0, "limit": 100, "total": 1, "has_more": False}})
        assert page.jobs == (Job("j1", "completed", 1795641031000, 1795641031630, 1795641031637, None),)
        assert page.jobs[0].terminal is True
        assert page.jobs[0].server_seconds == pytest.approx(0.007)
        assert page.has_more is False

    @pytest.mark.parametrize("status", ["pending", "in_progress"])
    def test_unfinished(self, status: str) -> None:
        """pending and in_progress jobs are not terminal and have no failure reason."""
        (job,) = parse_jobs({"jobs": [_job(status=status, execution_end_time=None)]}).jobs
        assert (job.terminal, job.failure_reason, job.end_ms, job.server_seconds) == (False, None, None, None)

    @pytest.mark.parametrize(
        ("error", "reason"),
        [
            ({"exception_type": "torch.OutOfMemoryError", "exception_message": "Allocation on device"}, Reason.OOM),
            ({"exception_type": "RuntimeError", "exception_message": "CUDA out of memory"}, Reason.OOM),
            (
                {"exception_type": "re.error", "exception_message": "missing ), unterminated subpattern"},
                Reason.EXECUTION_ERROR,
            ),
            ({"exception_type": "InsufficientFundsError", "exception_message": ""}, Reason.PAYMENT),
            ({"exception_type": None, "exception_message": 5}, Reason.EXECUTION_ERROR),
            # ComfyUI#11054's first release lists an interrupted prompt as "failed" with no execution_error.
            (None, Reason.INTERRUPTED),
            ("boom", Reason.INTERRUPTED),
        ],
    )
    def test_failed(self, error: Any, reason: Reason) -> None:
        """A failed job is classified from execution_error like a history entry; none means interrupted."""
        (job,) = parse_jobs({"jobs": [_job(status="failed", execution_error=error)]}).jobs
        assert (job.terminal, job.failure_reason) == (True, reason)

    def test_cancelled(self) -> None:
        """A cancelled job counts as interrupted."""
        (job,) = parse_jobs({"jobs": [_job(status="cancelled")]}).jobs
        assert (job.terminal, job.failure_reason) == (True, Reason.INTERRUPTED)

    def test_seconds_timestamps(self) -> None:
        """create_time in seconds (the v1 spec's unit) is converted to ms."""
        (job,) = parse_jobs({"jobs": [_job(create_time=1755684000.5)]}).jobs
        assert job.create_ms == 1755684000500

    def test_has_more(self) -> None:
        """pagination.has_more is read; a missing or odd pagination means no more pages."""
        assert parse_jobs({"jobs": [], "pagination": {"has_more": True}}).has_more is True
        assert parse_jobs({"jobs": []}).has_more is False
        assert parse_jobs({"jobs": [], "pagination": [True]}).has_more is False

    def test_order_kept(self) -> None:
        """Jobs come back in the server's order."""
        page = parse_jobs({"jobs": [_job(id="a"), _job(id="b"), _job(id="c")]})
        assert [j.id for j in page.jobs] == ["a", "b", "c"]

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({}, "jobs"),
            ({"jobs": {}}, "jobs"),
            ({"jobs": [None]}, "jobs[0]"),
            ({"jobs": [_job(status=None)]}, "jobs[0].status"),
            ({"jobs": [_job(id=7)]}, "jobs[0].id"),
        ],
    )
    def test_wrong_shape(self, body: Any, path: str) -> None:
        """A malformed jobs page raises ParseError naming the job."""
        with pytest.raises(ParseError) as info:
            parse_jobs(body)
        assert str(info.value).startswith(f"{path}:")


class TestToMs:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (1795641031637, 1795641031637),
            (1795641031.637, 1795641031637),
            (1755684000, 1755684000000),
            (0, None),
            (-5, None),
            (None, None),
            (True, None),
            ("1795641031637", None),
            (float("nan"), None),
            (float("inf"), None),
            (float("-inf"), None),
            (10**400, None),
            (1e19, None),
        ],
    )
    def test_units_and_garbage(self, value: Any, expected: int | None) -> None:
        """ms stay ms, seconds become ms, and anything unusable is None."""
        result = to_ms(value)
        assert result == expected if expected is None else result == pytest.approx(expected, abs=1)


class TestPromptAccepted:
    @pytest.mark.parametrize("name", PROMPT_OK_FIXTURES)
    def test_every_recording_parses(self, name: str) -> None:
        """Every recorded 200 answer gives its prompt id and number."""
        body = load_json(name)
        accepted = parse_prompt_accepted(body)
        assert accepted.prompt_id == body["prompt_id"]
        assert accepted.number == float(body["number"])
        assert accepted.node_errors == body["node_errors"]

    def test_canary_preview(self) -> None:
        """prompt_ok_canary_preview.json: the first prompt after boot, number 0, no node errors."""
        accepted = parse_prompt_accepted(load_json("prompt_ok_canary_preview.json"))
        assert (accepted.prompt_id, accepted.number, accepted.node_errors) == (PREVIEW, 0.0, {})

    @pytest.mark.parametrize(
        ("name", "prompt_id", "number"),
        [
            ("prompt_ok_custom_prompt_id.json", "comfywatch-canary-0001", 8.0),
            ("prompt_ok_explicit_number.json", "fe140708-0b9c-4422-a174-2b17c2a7b4f5", 5.0),
            ("prompt_ok_front.json", "6e2cb131-8b80-455a-975a-db0b75a234ef", -9.0),
        ],
    )
    def test_id_and_number_variants(self, name: str, prompt_id: str, number: float) -> None:
        """Custom ids, an explicit (float) number and front-of-queue (negative) numbers come through."""
        accepted = parse_prompt_accepted(load_json(name))
        assert (accepted.prompt_id, accepted.number) == (prompt_id, number)

    def test_partial_with_node_errors(self) -> None:
        """A 200 may still carry node_errors for outputs that were dropped."""
        accepted = parse_prompt_accepted(load_json("prompt_ok_partial_with_node_errors.json"))
        assert list(accepted.node_errors) == ["3"]
        assert accepted.node_errors["3"]["errors"][0]["type"] == "value_smaller_than_min"
        assert accepted.node_errors["3"]["dependent_outputs"] == ["4"]

    @pytest.mark.parametrize("name", PROMPT_ERROR_FIXTURES)
    def test_validation_error_bodies_are_not_acceptances(self, name: str) -> None:
        """A 400 validation body ({"error", "node_errors"}) is never mistaken for an accepted prompt."""
        with pytest.raises(ParseError):
            parse_prompt_accepted(load_json(name))

    @pytest.mark.parametrize("number", [None, True, "5", 10**400, float("nan"), float("inf")])
    def test_unusable_number(self, number: Any) -> None:
        """A missing, boolean, textual, overflowing or non-finite number gives None."""
        assert parse_prompt_accepted({"prompt_id": "p", "number": number}).number is None

    def test_null_node_errors(self) -> None:
        """node_errors may be null or absent."""
        assert parse_prompt_accepted({"prompt_id": "p", "node_errors": None}).node_errors == {}
        assert parse_prompt_accepted({"prompt_id": "p"}).node_errors == {}

    @pytest.mark.parametrize(
        "body", [{}, {"prompt_id": 5}, {"prompt_id": "p", "node_errors": ["x"]}, {"error": {"type": "x"}}, [], None]
    )
    def test_wrong_shape(self, body: Any) -> None:
        """No prompt id, a non-object node_errors or an error object is a ParseError."""
        with pytest.raises(ParseError):
            parse_prompt_accepted(body)


def _text_frames(name: str) -> list[dict[str, Any]]:
    return [frame["msg"] for frame in load_jsonl(name) if frame["kind"] == "text"]


class TestWsText:
    @pytest.mark.parametrize("name", WS_FIXTURES)
    def test_every_recorded_text_frame(self, name: str) -> None:
        """Every recorded text frame parses to its type, data (its strings sanitized: an exception message ends in
        a line break) and (when present) prompt id."""
        for msg in _text_frames(name):
            event = parse_ws_text(json.dumps(msg))
            assert event.type == msg["type"]
            assert event.data == {key: sanitize(value) if isinstance(value, str) else value
                                  for key, value in (msg["data"] or {}).items()}
            data_id = (msg["data"] or {}).get("prompt_id")
            assert event.prompt_id == (data_id if isinstance(data_id, str) else None)

    def test_canary_run_sequence(self) -> None:
        """ws_canary_preview_run.jsonl: status, status, execution_start ... and one end marker last."""
        events = [parse_ws_text(json.dumps(m)) for m in _text_frames("ws_canary_preview_run.jsonl")]
        assert [e.type for e in events[:4]] == ["status", "status", "execution_start", "execution_cached"]
        assert [e.is_end_marker for e in events].count(True) == 1
        assert events[-1].is_end_marker and events[-1].prompt_id == PREVIEW
        assert events[2].data["timestamp"] == 1795641031630

    def test_status_frame(self) -> None:
        """The first frame is a status broadcast: no prompt id, not an end marker."""
        (msg,) = _text_frames("ws_connect_status.jsonl")
        event = parse_ws_text(json.dumps(msg))
        assert (event.type, event.prompt_id, event.is_end_marker) == ("status", None, False)
        assert event.data["status"]["exec_info"] == {"queue_remaining": 0}

    def test_reconnect_executing_without_prompt_id(self) -> None:
        """A reconnected socket's ``executing {"node": "2"}`` has no prompt id and is not an end marker."""
        event = parse_ws_text(json.dumps(_text_frames("ws_reconnect_same_client_id_mid_run.jsonl")[1]))
        assert (event.type, event.prompt_id, event.is_end_marker) == ("executing", None, False)

    def test_executing_without_node_key_is_not_end(self) -> None:
        """Only an explicit ``node: null`` marks the end."""
        assert parse_ws_text('{"type": "executing", "data": {"prompt_id": "p"}}').is_end_marker is False
        assert parse_ws_text('{"type": "executing", "data": {"node": null, "prompt_id": "p"}}').is_end_marker is True

    def test_null_or_missing_data(self) -> None:
        """data may be null or absent."""
        assert parse_ws_text('{"type": "x", "data": null}').data == {}
        assert parse_ws_text('{"type": "x"}').data == {}

    def test_non_string_prompt_id_ignored(self) -> None:
        """A non-string prompt_id is not lifted out."""
        assert parse_ws_text('{"type": "x", "data": {"prompt_id": 5}}').prompt_id is None

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "not json",
            "[1, 2]",
            '"status"',
            '{"data": {}}',
            '{"type": 1}',
            '{"type": "x", "data": [1]}',
            "[" * 100_000 + "]" * 100_000,
        ],
    )
    def test_not_a_frame(self, text: str) -> None:
        """Non-JSON, non-objects, missing type, non-object data and absurd nesting are ParseErrors."""
        with pytest.raises(ParseError):
            parse_ws_text(text)

    def test_ws_event_skips_what_is_not_an_event(self) -> None:
        """``ws_event`` gives the event of a text frame, and None for binary previews and bad text."""
        frame = _text_frames("ws_canary_text_run.jsonl")[0]
        event = ws_event(json.dumps(frame))
        assert event is not None and event.type == frame["type"]
        assert ws_event(b"\x00\x00\x00\x01\x89PNG") is None
        assert ws_event("not json") is None
        assert ws_event('{"type": 1}') is None

    def test_oversized_frame(self) -> None:
        """A frame above the cap is refused before decoding."""
        text = json.dumps({"type": "x", "data": {"pad": "x" * MAX_FRAME_CHARS}})
        with pytest.raises(ParseError, match="too large"):
            parse_ws_text(text)

    def test_data_is_copied(self) -> None:
        """The event's data is its own dict."""
        msg = copy.deepcopy(_text_frames("ws_runtime_error_run.jsonl")[-3])
        event = parse_ws_text(json.dumps(msg))
        assert event.type == "execution_error"
        assert event.data["exception_type"] == "re.error"
