"""The HTTP client's per-client caches stay bounded however many distinct requests it makes."""

from __future__ import annotations

from comfywatch.clients.http import MAX_CACHED_TIMEOUTS, ClientSettings, HttpClient


def test_deadline_timeouts_are_built_but_not_all_kept() -> None:
    """A canary asks for what is left of its deadline, a new value each time: the cache must not grow
    with them (it did, by two entries per canary run, for the daemon's lifetime), and the timeout a poll
    keeps using must stay cached among them."""
    client = HttpClient(ClientSettings(base_url="http://127.0.0.1:8188"))
    poll_timeout: object = None
    for step in range(1000):
        remaining = 30.0 - step * 0.0137
        timeout = client._timeout(remaining)
        assert timeout.total == remaining
        if step >= 100 and step % 10 == 0:  # the first poll comes after a hundred canary requests
            if poll_timeout is not None:
                assert client._timeout(5.0) is poll_timeout
            poll_timeout = client._timeout(5.0)
    assert len(client._timeouts) == MAX_CACHED_TIMEOUTS


def test_a_repeated_timeout_is_the_same_object() -> None:
    """Polls repeat the same few timeouts: those are built once."""
    client = HttpClient(ClientSettings(base_url="http://127.0.0.1:8188", connect_timeout=2.0))
    first = client._timeout(5.0)
    assert client._timeout(5.0) is first
    assert (first.total, first.connect) == (5.0, 2.0)


def test_paths_with_ids_are_not_all_kept() -> None:
    """``/history/{id}`` is a new path per canary run; only the first 64 paths are kept."""
    client = HttpClient(ClientSettings(base_url="http://127.0.0.1:8188/base"))
    for index in range(500):
        url = client.url(f"/api/history/{index:04d}")
        assert str(url) == f"http://127.0.0.1:8188/base/api/history/{index:04d}"
    assert len(client._urls) == 64
