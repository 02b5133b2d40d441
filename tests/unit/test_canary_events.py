"""Tests for comfywatch.parse.canary_events.PromptFollower, fed the recorded WebSocket sessions frame by frame."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.errors import ParseError, Reason
from comfywatch.parse.canary_events import (
    MAX_OUTPUT_IMAGES,
    MAX_OUTPUT_ITEMS,
    MAX_OUTPUT_NODES,
    MAX_OUTPUT_TEXT_CHARS,
    Progress,
    PromptFollower,
)
from comfywatch.parse.prompt import MAX_FRAME_CHARS, WsEvent, parse_ws_text, ws_event
from tests.fixtures import FIXTURES, load_jsonl

PREVIEW = "45cff707-f375-43ec-a1ee-dd35544ef20f"
CACHED = "4e26e3ae-46e7-4bdf-a9ae-93c19c675bc0"
SAVE = "9d4e3132-2134-4acb-8ff7-bcae8b12990b"
TEXT = "eb7221e8-30c4-4c39-8ea0-b1cb5d29aafd"
WSIMAGE = "67a22452-d414-48d1-abdb-bbe7dfe0bdbc"
RUNTIME_ERROR = "854dccab-4578-488d-bb19-6f91cad0be46"
A_INTERRUPTED = "a6cc3698-5c2e-428d-a2a9-c381ae8735a9"
C_AFTER = "da253e1e-97ed-4109-96a7-a557efd4f75b"
D_INTERRUPTED = "07c24684-ad9c-4eb6-8540-0e8080d59288"
RECONNECTED = "4f5c3ff5-e429-4e05-bfbc-502f67d8f859"
NO_CLIENT_ID = "22f91d78-4708-45e6-8f27-3b847cd0f850"
EVENT_TYPES = [
    "status",
    "execution_start",
    "execution_cached",
    "executing",
    "executed",
    "progress",
    "progress_state",
    "execution_success",
    "execution_error",
    "execution_interrupted",
    "feature_flags",
    "logs",
]


def frames(name: str) -> list[tuple[float, WsEvent]]:
    """(arrival time, parsed event) for every text frame of a recording."""
    return [(f["t"], parse_ws_text(json.dumps(f["msg"]))) for f in load_jsonl(name) if f["kind"] == "text"]


def messages(name: str) -> list[tuple[float, str | bytes]]:
    """(arrival time, message as the socket gives it) for every frame of a recording; a binary frame is its first
    bytes (a preview's header and PNG magic), which is all a recording keeps of it."""
    return [(f["t"], json.dumps(f["msg"]) if f["kind"] == "text" else bytes.fromhex(f["first_16_bytes_hex"]))
            for f in load_jsonl(name)]


def follow(name: str, prompt_id: str) -> PromptFollower:
    """The follower after every message of a recording, fed as the canary feeds it."""
    follower = PromptFollower(prompt_id)
    for at, message in messages(name):
        follower.feed_message(message, at)
    return follower


def time_of(name: str, prompt_id: str, predicate: Any) -> float:
    return next(at for at, event in frames(name) if event.prompt_id == prompt_id and predicate(event))


class TestSuccessfulRuns:
    @pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("ws_canary_*.jsonl")))
    def test_every_recorded_canary_succeeds(self, name: str) -> None:
        """Each recorded canary session, followed for its own prompt, ends DONE with server timing."""
        (prompt_id,) = {e.prompt_id for _, e in frames(name) if e.type == "execution_start"}
        assert prompt_id is not None
        follower = follow(name, prompt_id)
        assert (follower.state, follower.finished, follower.failure, follower.failure_detail) == (
            Progress.DONE,
            True,
            None,
            "",
        )
        assert follower.server_seconds is not None and 0 <= follower.server_seconds < 0.1
        assert follower.started_at is not None and follower.ended_at is not None
        assert follower.started_at <= follower.ended_at

    def test_preview_canary(self) -> None:
        """ws_canary_preview_run.jsonl: done, no failure, server time 7 ms, the temp image as output."""
        follower = follow("ws_canary_preview_run.jsonl", PREVIEW)
        assert (follower.state, follower.finished, follower.failure) == (Progress.DONE, True, None)
        assert (follower.server_start_ms, follower.server_end_ms) == (1795641031630, 1795641031637)
        assert follower.server_seconds == pytest.approx(0.007)
        assert follower.outputs == {
            "2": {"images": [{"filename": "ComfyUI_temp_xqydl_00001_.png", "subfolder": "", "type": "temp"}]}
        }
        name = "ws_canary_preview_run.jsonl"
        assert follower.started_at == time_of(name, PREVIEW, lambda e: e.type == "execution_start")
        assert follower.succeeded_at == time_of(name, PREVIEW, lambda e: e.type == "execution_success")
        assert follower.ended_at == time_of(name, PREVIEW, lambda e: e.is_end_marker)
        assert follower.last_activity == follower.ended_at
        assert follower.started_at <= follower.succeeded_at <= follower.ended_at

    def test_cached_run(self) -> None:
        """A fully cached run still ends DONE and still reports the output node's result."""
        follower = follow("ws_canary_preview_cached_run.jsonl", CACHED)
        assert (follower.state, follower.failure) == (Progress.DONE, None)
        assert list(follower.outputs) == ["2"]
        assert follower.server_seconds == pytest.approx(0.001)

    def test_text_canary_echo(self) -> None:
        """The PreviewAny canary's executed event carries the echoed text."""
        follower = follow("ws_canary_text_run.jsonl", TEXT)
        assert follower.state is Progress.DONE
        assert follower.outputs["2"] == {"text": ["comfywatch canary 1"]}

    def test_save_canary(self) -> None:
        """The SaveImage canary reports an output-folder image."""
        follower = follow("ws_canary_save_run.jsonl", SAVE)
        assert follower.state is Progress.DONE
        assert follower.outputs["3"]["images"][0]["type"] == "output"
        assert follower.server_seconds == pytest.approx(0.003)

    def test_websocket_image_canary(self) -> None:
        """SaveImageWebsocket sends no executed event (its image is a binary frame): DONE with no outputs."""
        follower = follow("ws_canary_wsimage_run.jsonl", WSIMAGE)
        assert (follower.state, follower.outputs) == (Progress.DONE, {})

    def test_success_before_end_marker(self) -> None:
        """execution_success alone is SUCCEEDED but not finished: history is written only at the end marker."""
        follower = PromptFollower(PREVIEW)
        for at, event in frames("ws_canary_preview_run.jsonl"):
            if event.is_end_marker:
                break
            follower.feed(event, at)
        assert (follower.state, follower.finished, follower.ended_at) == (Progress.SUCCEEDED, False, None)

    def test_running_after_start(self) -> None:
        """execution_start moves the follower from WAITING to RUNNING."""
        follower = PromptFollower(PREVIEW)
        assert follower.state is Progress.WAITING and follower.server_seconds is None
        ((at, start),) = [(a, e) for a, e in frames("ws_canary_preview_run.jsonl") if e.type == "execution_start"]
        follower.feed(start, at)
        assert (follower.state, follower.started_at, follower.finished) == (Progress.RUNNING, at, False)


class TestFailedRuns:
    def test_runtime_error(self) -> None:
        """ws_runtime_error_run.jsonl: FAILED with EXECUTION_ERROR, the node and exception type in the detail."""
        follower = follow("ws_runtime_error_run.jsonl", RUNTIME_ERROR)
        assert (follower.state, follower.finished) == (Progress.FAILED, True)
        assert follower.failure is Reason.EXECUTION_ERROR
        assert follower.failure_detail == "RegexReplace: re.error"
        assert follower.server_seconds == pytest.approx(0.005)
        assert "unterminated" not in follower.failure_detail

    def test_error_is_final_before_end_marker(self) -> None:
        """The follower is finished as soon as execution_error arrives."""
        follower = PromptFollower(RUNTIME_ERROR)
        for at, event in frames("ws_runtime_error_run.jsonl"):
            follower.feed(event, at)
            if event.type == "execution_error":
                assert follower.finished and follower.ended_at == at
                break
        else:
            pytest.fail("no execution_error in the recording")

    def test_targeted_interrupt(self) -> None:
        """ws_queue_ops_and_interrupt.jsonl: prompt A is INTERRUPTED after ~4.1 s of server time."""
        follower = follow("ws_queue_ops_and_interrupt.jsonl", A_INTERRUPTED)
        assert (follower.state, follower.failure, follower.failure_detail) == (
            Progress.FAILED,
            Reason.INTERRUPTED,
            "interrupted",
        )
        assert follower.server_seconds == pytest.approx(4.106)
        assert follower.outputs == {}

    def test_prompt_after_interrupt_succeeds(self) -> None:
        """C, which ran after A's interrupt, succeeds; A's and D's events do not leak into its follower."""
        name = "ws_queue_ops_and_interrupt.jsonl"
        follower = follow(name, C_AFTER)
        assert (follower.state, follower.failure) == (Progress.DONE, None)
        assert follower.outputs["2"] == {"text": ["after interrupt"]}
        assert follower.started_at == time_of(name, C_AFTER, lambda e: e.type == "execution_start")
        assert follower.started_at >= time_of(name, A_INTERRUPTED, lambda e: e.is_end_marker)
        assert follower.ended_at is not None
        assert follower.ended_at < time_of(name, D_INTERRUPTED, lambda e: e.type == "execution_start")

    def test_global_interrupt(self) -> None:
        """A global /interrupt stops D: INTERRUPTED."""
        follower = follow("ws_queue_ops_and_interrupt.jsonl", D_INTERRUPTED)
        assert (follower.state, follower.failure) == (Progress.FAILED, Reason.INTERRUPTED)
        assert follower.server_seconds == pytest.approx(3.582)

    def test_reconnected_socket(self) -> None:
        """A reconnected socket's prompt-less ``executing`` is ignored; the interrupt is still seen."""
        name = "ws_reconnect_same_client_id_mid_run.jsonl"
        follower = PromptFollower(RECONNECTED)
        (first_at, first), *rest = [(a, e) for a, e in frames(name) if e.type != "status"]
        follower.feed(first, first_at)
        assert (first.prompt_id, follower.state, follower.last_activity) == (None, Progress.WAITING, None)
        for at, event in rest:
            follower.feed(event, at)
        assert (follower.state, follower.failure) == (Progress.FAILED, Reason.INTERRUPTED)
        assert follower.server_start_ms is None and follower.server_seconds is None

    def test_oom_event(self) -> None:
        """An execution_error for an OOM is Reason.OOM."""
        follower = PromptFollower("p")
        follower.feed(
            WsEvent(
                "execution_error",
                {
                    "prompt_id": "p",
                    "exception_type": "torch.OutOfMemoryError",
                    "exception_message": "Allocation on device",
                    "node_type": "KSampler",
                },
                "p",
            ),
            1.0,
        )
        assert (follower.failure, follower.failure_detail) == (Reason.OOM, "KSampler: torch.OutOfMemoryError")

    def test_success_then_error_is_failure(self) -> None:
        """An error after a success report wins (the prompt did not complete)."""
        follower = PromptFollower("p")
        follower.feed(WsEvent("execution_success", {"prompt_id": "p"}, "p"), 1.0)
        follower.feed(WsEvent("execution_error", {"prompt_id": "p"}, "p"), 2.0)
        follower.feed(WsEvent("executing", {"node": None, "prompt_id": "p"}, "p"), 3.0)
        assert (follower.state, follower.failure, follower.failure_detail) == (
            Progress.FAILED,
            Reason.EXECUTION_ERROR,
            "?: error",
        )
        assert follower.ended_at == 3.0


class TestOutputsKept:
    def test_as_many_image_records_as_a_canary_may_expect_are_kept(self) -> None:
        """A canary may expect up to MAX_OUTPUT_IMAGES images: that many records are kept, so its count is the
        server's; beyond it they are cut."""
        image = {"filename": "a.png", "subfolder": "", "type": "temp"}
        follower = PromptFollower("p")
        for node, count in (("9", MAX_OUTPUT_IMAGES), ("10", MAX_OUTPUT_IMAGES + 5)):
            follower.feed(WsEvent("executed", {"prompt_id": "p", "node": node, "output": {"images": [image] * count}},
                                  "p"), 1.0)
        assert [len(follower.outputs[node]["images"]) for node in ("9", "10")] == [MAX_OUTPUT_IMAGES] * 2

    def test_an_output_of_a_million_entries_keeps_what_verification_reads(self) -> None:
        """An ``executed`` frame just under the frame bound, its output a million empty objects beside images
        and texts: the follower keeps the image records (their scalar fields) and the first MAX_OUTPUT_ITEMS
        texts (cut to MAX_OUTPUT_TEXT_CHARS), nothing else, however many the server sent."""
        image = {"filename": "a.png", "subfolder": "", "type": "temp", "extra": [1] * 100}
        output = {"images": [image, "not a record"] * 100, "text": ["t" * 10_000, 7, ["no"]] * 100,
                  "pad": [{}] * 1_000_000}
        frame = json.dumps({"type": "executed", "data": {"prompt_id": "p", "node": "9", "output": output}},
                           separators=(",", ":"))
        assert len(frame) < MAX_FRAME_CHARS
        follower = PromptFollower("p")
        follower.feed_message(frame, 1.0)
        kept = follower.outputs["9"]
        assert set(kept) == {"images", "text"}
        assert kept["images"] == [{"filename": "a.png", "subfolder": "", "type": "temp"}] * 100
        assert kept["text"][:2] == ["t" * 10_000, 7] and len(kept["text"]) == MAX_OUTPUT_ITEMS

    def test_a_text_output_is_cut_not_cleaned(self) -> None:
        """A text over MAX_OUTPUT_TEXT_CHARS is cut to it; its line breaks stay (a pattern may look for them)."""
        follower = PromptFollower("p")
        text = "line\n" + "t" * 2 * MAX_OUTPUT_TEXT_CHARS
        follower.feed(WsEvent("executed", {"prompt_id": "p", "node": "9", "output": {"text": [text]}}, "p"), 1.0)
        assert follower.outputs["9"] == {"text": [text[:MAX_OUTPUT_TEXT_CHARS]]}

    def test_at_most_so_many_output_nodes_with_bounded_names(self) -> None:
        """Outputs of more nodes than MAX_OUTPUT_NODES keep the first ones; a node id is kept bounded."""
        follower = PromptFollower("p")
        for node in ["n" * 10_000, *map(str, range(2 * MAX_OUTPUT_NODES))]:
            follower.feed(WsEvent("executed", {"prompt_id": "p", "node": node, "output": {}}, "p"), 1.0)
        assert len(follower.outputs) == MAX_OUTPUT_NODES
        assert max(map(len, follower.outputs)) <= 256


class TestOtherPromptsIgnored:
    @pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("ws_*.jsonl")))
    def test_unrelated_prompt_sees_nothing(self, name: str) -> None:
        """A follower for a prompt id that appears nowhere stays untouched by every recording."""
        follower = follow(name, "00000000-0000-0000-0000-000000000000")
        assert follower == PromptFollower("00000000-0000-0000-0000-000000000000")

    def test_observer_sees_only_status(self) -> None:
        """Another client's run shows up only as status frames: the follower keeps waiting."""
        follower = follow("ws_observer_during_other_client_run.jsonl", PREVIEW)
        assert (follower.state, follower.last_activity) == (Progress.WAITING, None)

    def test_prompt_without_client_id(self) -> None:
        """A prompt posted without client_id reaches sockets only as progress_state: RUNNING, never finished."""
        follower = follow("ws_observer_prompt_without_client_id.jsonl", NO_CLIENT_ID)
        assert (follower.state, follower.finished, follower.failure) == (Progress.RUNNING, False, None)
        assert follower.started_at is not None and follower.server_start_ms is None

    def test_cached_event_alone_does_not_start_clock(self) -> None:
        """execution_cached marks RUNNING but is not the start of execution."""
        follower = PromptFollower("p")
        follower.feed(WsEvent("execution_cached", {"prompt_id": "p", "nodes": ["1"]}, "p"), 1.0)
        assert (follower.state, follower.started_at) == (Progress.RUNNING, None)


class TestBounds:
    def test_outputs_bounded(self) -> None:
        """At most 64 output nodes are remembered, whatever a workflow sends."""
        follower = PromptFollower("p")
        for i in range(500):
            follower.feed(WsEvent("executed", {"prompt_id": "p", "node": str(i), "output": {"text": ["x"]}}, "p"), i)
        assert len(follower.outputs) == 64

    def test_failure_detail_bounded(self) -> None:
        """The failure detail is at most 200 characters."""
        follower = PromptFollower("p")
        follower.feed(WsEvent("execution_error", {"node_type": "N" * 500, "exception_type": "E" * 500}, "p"), 1.0)
        assert len(follower.failure_detail) == 200

    @pytest.mark.parametrize(
        "timestamp", [float("nan"), float("inf"), float("-inf"), 10**400, "1795641031630", True, None, [1]]
    )
    def test_unusable_timestamps(self, timestamp: Any) -> None:
        """Non-numeric or non-finite timestamps are ignored, never raised on."""
        follower = PromptFollower("p")
        follower.feed(WsEvent("execution_start", {"prompt_id": "p", "timestamp": timestamp}, "p"), 1.0)
        follower.feed(WsEvent("execution_success", {"prompt_id": "p", "timestamp": timestamp}, "p"), 2.0)
        assert (follower.server_start_ms, follower.server_end_ms, follower.server_seconds) == (None, None, None)

    def test_clock_backwards_gives_no_duration(self) -> None:
        """A server end before its start gives no duration."""
        follower = PromptFollower("p")
        follower.feed(WsEvent("execution_start", {"timestamp": 5000}, "p"), 1.0)
        follower.feed(WsEvent("execution_success", {"timestamp": 4000}, "p"), 2.0)
        assert follower.server_seconds is None


HOSTILE_KEYS = ["prompt_id", "timestamp", "node", "output", "exception_type", "exception_message", "node_type"]
#: Strings that sanitizing changes (or, for "p", leaves as the follower's own prompt id).
hostile_strings = st.sampled_from(["p", "p\u202a", "\u2066p", "p\x01", "", "\ud800", "q", "x" * 300])
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
hostile_values = scalars | hostile_strings | st.dictionaries(hostile_strings, json_values, max_size=2)
event_data = st.dictionaries(
    st.sampled_from(
        [
            "prompt_id",
            "timestamp",
            "node",
            "output",
            "exception_type",
            "exception_message",
            "node_type",
            "nodes",
            "value",
        ]
    )
    | st.text(max_size=8),
    scalars | json_values,
    max_size=4,
)


class TestNeverRaises:
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(EVENT_TYPES) | st.text(max_size=12),
                event_data,
                st.sampled_from(["p", "other"]) | st.none(),
            ),
            max_size=8,
        )
    )
    def test_arbitrary_event_sequences(self, events: list[tuple[str, dict[str, Any], str | None]]) -> None:
        """Any sequence of events (any types, any data) is absorbed without an exception."""
        follower = PromptFollower("p")
        for at, (kind, data, prompt_id) in enumerate(events):
            follower.feed(WsEvent(kind, data, prompt_id), float(at))
        assert follower.state in set(Progress)
        assert len(follower.outputs) <= 64
        if all(prompt_id != "p" for _, _, prompt_id in events):
            assert follower == PromptFollower("p")

    @given(st.text(max_size=200) | json_values.map(lambda v: json.dumps({"type": "executing", "data": v})))
    def test_arbitrary_frames(self, text: str) -> None:
        """Any text frame either fails to parse (ParseError) or is fed without an exception."""
        follower = PromptFollower("p")
        try:
            event = parse_ws_text(text)
        except ParseError:
            return
        follower.feed(event, 0.0)
        assert follower.state in set(Progress)


class TestMessagesReadAsEvents:
    """``feed_message`` reads usual frames without building an event: it must end exactly where ``feed`` of the
    decoded event (``ws_event``, the one decoder of frames) ends, for any message."""

    @staticmethod
    def assert_same_as_events(prompt_id: str, sequence: list[str | bytes]) -> None:
        by_message, by_event = PromptFollower(prompt_id), PromptFollower(prompt_id)
        for at, message in enumerate(sequence):
            by_message.feed_message(message, float(at))
            if (event := ws_event(message)) is not None:
                by_event.feed(event, float(at))
            assert by_message == by_event, message

    @pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("ws_*.jsonl")))
    def test_recordings(self, name: str) -> None:
        """Every recorded session, followed for each prompt in it (and for one that is not), frame by frame."""
        sequence = [message for _, message in messages(name)]
        prompt_ids = {event.prompt_id for _, event in frames(name) if event.prompt_id is not None}
        for prompt_id in [*sorted(prompt_ids), "00000000-0000-0000-0000-000000000000"]:
            self.assert_same_as_events(prompt_id, sequence)

    def test_binary_frames_are_ignored(self) -> None:
        """A preview (binary frame) changes nothing, even one that happens to carry a frame's text."""
        follower = PromptFollower("p")
        follower.feed_message(b"\x00\x00\x00\x01\x89PNG", 1.0)
        follower.feed_message(json.dumps({"type": "executing", "data": {"node": None, "prompt_id": "p"}}).encode(), 2.0)
        assert follower == PromptFollower("p")

    @pytest.mark.parametrize(
        ("frame", "expected"),
        [
            # Sanitizing turns these into the follower's own prompt id and a known type: followed, as events are.
            ({"type": "execution_start", "data": {"prompt_id": "p\u202e", "timestamp": 5}}, (Progress.RUNNING, 5)),
            ({"type": "execution_\u2066start", "data": {"prompt_id": "p", "timestamp": 5}}, (Progress.RUNNING, 5)),
            ({"type": "execution_start", "data": {"prompt_id": "q", "timestamp": 5}}, (Progress.WAITING, None)),
            ({"type": "execution_start", "data": [], "prompt_id": "p"}, (Progress.WAITING, None)),
            ({"type": "execution_start", "timestamp": 5}, (Progress.WAITING, None)),
        ],
    )
    def test_unusual_frames(self, frame: dict[str, Any], expected: tuple[Progress, int | None]) -> None:
        """Frames a plain read would get wrong are read as ``ws_event`` reads them."""
        follower = PromptFollower("p")
        follower.feed_message(json.dumps(frame), 1.0)
        assert (follower.state, follower.server_start_ms) == expected
        self.assert_same_as_events("p", [json.dumps(frame)])

    def test_kept_strings_are_sanitized(self) -> None:
        """An output node's name and an error's node and exception types are kept sanitized."""
        follower = PromptFollower("p")
        follower.feed_message(json.dumps({"type": "executed", "data": {
            "prompt_id": "p", "node": "2\x1b[2J", "output": {"text": ["x"]}}}), 1.0)
        follower.feed_message(json.dumps({"type": "execution_error", "data": {
            "prompt_id": "p", "node_type": "Node\u202e", "exception_type": "Bad\nError"}}), 2.0)
        assert list(follower.outputs) == ["2 [2J"]
        assert (follower.failure, follower.failure_detail) == (Reason.EXECUTION_ERROR, "Node: Bad Error")

    def test_oversized_frame_is_no_event(self) -> None:
        """A frame over the decoder's bound is no event, whatever it says."""
        frame = json.dumps({"type": "execution_start", "data": {"prompt_id": "p", "pad": "x" * MAX_FRAME_CHARS}})
        follower = PromptFollower("p")
        follower.feed_message(frame, 1.0)
        assert follower == PromptFollower("p")

    @given(st.lists(
        st.builds(
            lambda kind, data, extra: json.dumps({"type": kind, "data": data, **extra}, allow_nan=True),
            st.sampled_from([*EVENT_TYPES, "execution_\u202astart", "x" * 300]) | json_values,
            st.dictionaries(st.sampled_from(HOSTILE_KEYS) | st.text(max_size=4), hostile_values, max_size=5)
            | json_values,
            st.dictionaries(st.text(max_size=3), json_values, max_size=2),
        )
        | st.text(max_size=60)
        | st.binary(max_size=20),
        max_size=10,
    ))
    def test_arbitrary_messages(self, sequence: list[str | bytes]) -> None:
        """Any sequence of messages (any types, ids and strings that sanitizing changes, non-object data, junk)."""
        self.assert_same_as_events("p", sequence)
