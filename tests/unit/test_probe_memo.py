"""``WithoutJobsApi``: what /probe remembers about a server (that it has no ``/api/jobs``), bounded in number
and in time."""

from __future__ import annotations

import pytest

from comfywatch.server import probe
from comfywatch.server.probe import WithoutJobsApi

OLD = ("local", "http://old.lan:8188")
NEW = ("local", "http://new.lan:8188")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(probe.time, "monotonic", lambda: now[0])
    return now


def test_a_404_is_remembered_until_max_age(clock: list[float]) -> None:
    memo = WithoutJobsApi(max_age=120.0)
    memo.record(OLD, False)
    clock[0] += 119.0
    assert OLD in memo
    assert NEW not in memo
    clock[0] += 1.0
    assert OLD not in memo
    assert len(memo) == 0


def test_asking_again_does_not_extend_the_age(clock: list[float]) -> None:
    """A server upgraded since is asked again max_age after the first 404, however often it is probed."""
    memo = WithoutJobsApi(max_age=120.0)
    memo.record(OLD, False)
    clock[0] += 100.0
    memo.record(OLD, False)
    clock[0] += 20.0
    assert OLD not in memo


def test_a_served_jobs_api_forgets_and_an_unasked_one_changes_nothing(clock: list[float]) -> None:
    memo = WithoutJobsApi()
    memo.record(OLD, False)
    memo.record(OLD, None)
    assert OLD in memo
    memo.record(OLD, True)
    assert OLD not in memo
    memo.record(NEW, None)
    assert NEW not in memo


def test_the_oldest_go_beyond_max_entries(clock: list[float]) -> None:
    memo = WithoutJobsApi(max_entries=3)
    servers = [("local", f"http://gpu-{i}.lan:8188") for i in range(5)]
    for server in servers:
        memo.record(server, False)
    assert len(memo) == 3
    assert [server in memo for server in servers] == [False, False, True, True, True]
