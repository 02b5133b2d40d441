"""``WithoutJobsApi``: what /probe remembers about a server (that it has no ``/api/jobs``), bounded in number
and in time."""

from __future__ import annotations

from comfywatch.server.probe import JobsApiAnswer, WithoutJobsApi
from tests.helpers import Clock

OLD = ("local", "http://old.lan:8188")
NEW = ("local", "http://new.lan:8188")


def test_a_404_is_remembered_with_its_version_until_max_age() -> None:
    clock = Clock()
    memo = WithoutJobsApi(max_age=120.0, clock=clock)
    memo.record(OLD, False, "0.3.64")
    clock.now += 119.0
    assert memo.get(OLD) == JobsApiAnswer(1000.0, "0.3.64")
    assert memo.get(NEW) is None
    clock.now += 1.0
    assert memo.get(OLD) is None
    assert len(memo) == 0


def test_a_new_404_starts_the_age_again_and_takes_the_new_version() -> None:
    clock = Clock()
    memo = WithoutJobsApi(max_age=120.0, clock=clock)
    memo.record(OLD, False, "0.3.64")
    clock.now += 100.0
    memo.record(OLD, False, "0.3.65")
    clock.now += 100.0
    assert memo.get(OLD) == JobsApiAnswer(1100.0, "0.3.65")


def test_a_served_jobs_api_forgets_and_no_answer_changes_nothing() -> None:
    memo = WithoutJobsApi(clock=Clock())
    memo.record(OLD, False, None)
    memo.record(OLD, None, None)
    assert memo.get(OLD) is not None
    memo.record(OLD, True, "0.3.70")
    assert memo.get(OLD) is None
    memo.record(NEW, None, None)
    assert memo.get(NEW) is None


def test_expired_answers_go_even_when_never_looked_up() -> None:
    clock = Clock()
    memo = WithoutJobsApi(max_age=120.0, clock=clock)
    for index in range(50):
        memo.record(("local", f"http://gpu-{index}.lan:8188"), False, None)
    clock.now += 120.0
    memo.record(OLD, False, None)
    assert len(memo) == 1


def test_the_oldest_go_beyond_max_entries() -> None:
    clock = Clock()
    memo = WithoutJobsApi(max_entries=3, clock=clock)
    servers = [("local", f"http://gpu-{index}.lan:8188") for index in range(5)]
    for server in servers:
        clock.now += 1.0
        memo.record(server, False, None)
    assert len(memo) == 3
    assert [memo.get(server) is not None for server in servers] == [False, False, True, True, True]


def test_a_recorded_again_answer_moves_behind_the_others() -> None:
    """Expiry takes from the front: an answer recorded again must not shield the ones recorded after it."""
    clock = Clock()
    memo = WithoutJobsApi(max_age=120.0, clock=clock)
    memo.record(OLD, False, None)
    clock.now += 10.0
    memo.record(NEW, False, None)
    clock.now += 10.0
    memo.record(OLD, False, None)
    clock.now += 110.0
    assert memo.get(NEW) is None
    assert memo.get(OLD) is not None
