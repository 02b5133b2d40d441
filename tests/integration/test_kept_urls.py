"""What a target's client keeps between requests: the URLs of the paths its polls request, not those of a
catalogue read's two dozen model folders or of a canary's ``/history/{id}`` (each kept URL caches its parts as
aiohttp reads them, about 600 bytes a URL, a fleet's worth of memory at 10,000 targets)."""

from __future__ import annotations

from types import SimpleNamespace

from comfywatch.checks.catalog import observe
from comfywatch.clients.http import ClientSettings, HttpClient
from comfywatch.clients.local import LocalApi
from comfywatch.sim.admin import SimHandle

POLLED = {"/api/system_stats", "/api/queue", "/api/history"}


class _Context:
    """What the catalogue read asks of a target's context: its API, and its name for a warning."""

    def __init__(self, api: LocalApi) -> None:
        self.api = api
        self.config = SimpleNamespace(name="sim")

    def local_api(self) -> LocalApi:
        return self.api


async def test_a_catalogue_read_keeps_no_url_and_a_poll_keeps_its_own(local_sim: SimHandle) -> None:
    http = HttpClient(ClientSettings(base_url=local_sim.url))
    api = LocalApi(http)
    try:
        observation = await observe(_Context(api), None)  # type: ignore[arg-type]
        await api.history_entry("0" * 32)
        assert observation.catalog.model_counts, "the simulator lists model folders: the read asked for each"
        assert http._urls == {}
        await api.system_stats()
        await api.queue()
        await api.history(16)
        assert set(http._urls) == POLLED
        kept = dict(http._urls)
        await api.system_stats()
        assert http._urls["/api/system_stats"] is kept["/api/system_stats"]
    finally:
        await api.close()
