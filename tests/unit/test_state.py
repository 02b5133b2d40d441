"""Per-target state: what a server's answers can add to it stays bounded."""

from __future__ import annotations

from http import HTTPStatus

from comfywatch.state import CanaryState, CheckState, CloudState, TargetState, code_label


def test_request_code_labels_are_bounded() -> None:
    """A server answering with arbitrary status numbers adds at most one series per class, not one per number."""
    state = TargetState("t", "local", "http://h", endpoints=["system_stats"])
    for code in range(100, 1000):
        state.on_exchange("system_stats", code, 0.01)
    state.on_exchange("system_stats", None, 0.01)
    labels = {code for endpoint, code in state.requests if endpoint == "system_stats"}
    assert {"200", "404", "503", "none", "5xx", "other"} <= labels
    assert "777" not in labels and "599" not in labels
    assert len(labels) == len(HTTPStatus) + len(["1xx", "2xx", "3xx", "4xx", "5xx", "other", "none"])
    assert sum(state.requests.values()) == 901


def test_code_label() -> None:
    assert [code_label(c) for c in (None, 200, 429, 599, 777, 99)] == ["none", "200", "429", "5xx", "other", "other"]


def test_what_every_target_keeps_has_no_instance_dict() -> None:
    """Ten thousand targets each keep a state, its checks, canaries and Cloud account: slots, not dicts."""
    state = TargetState("t", "cloud", "https://cloud.example", endpoints=["system_stats"])
    for kept in (state, CheckState(), CanaryState("c"), CloudState()):
        assert not hasattr(kept, "__dict__"), type(kept).__name__
