"""Series per target: an idle ComfyUI server with the default canary stays within its budget of series.

Every series a target exports costs the user's Prometheus for as long as the target lives; at a thousand GPUs
a series per target is a thousand. docs/metrics.md ("Series per target") lists the counts this test measures.
"""

from __future__ import annotations

from pathlib import Path

from comfywatch.sim.admin import start_sim
from tests.helpers import Metrics
from tests.integration.conftest import TARGET, Watch, config_toml, target_toml, watching

#: The budget of an idle local target with the default canary, every check run (docs/metrics.md).
IDLE_BUDGET = 80
#: Checks an idle local target runs with the shipped defaults.
ALL_CHECKS = ("system", "queue", "jobs", "network", "canary", "catalog")


def _config(url: str, detail: str | None) -> str:
    text = config_toml(target_toml(TARGET, url, canary="2s"))
    return text if detail is None else f'[metrics]\ndetail = "{detail}"\n\n{text}'


def _series(m: Metrics) -> list[tuple[str, dict[str, str]]]:
    return [(name, labels) for name, labels, _ in m.samples if labels.get("target") == TARGET]


async def _settled(watch: Watch) -> Metrics:
    """Every check has succeeded and the canary has run once with the monitoring WebSocket connected."""
    def done(m: Metrics) -> bool:
        return (watch.value(m, "comfywatch_websocket_connected") == 1.0
                and (watch.value(m, "comfyui_canary_runs_total", canary="preview-image") or 0) >= 1
                and all(watch.value(m, "comfywatch_check_last_success_timestamp_seconds", check=check) is not None
                        for check in ALL_CHECKS))
    await watch.until(done, "every check run once", timeout=20)
    return await watch.polls(2, check="system")


async def test_an_idle_server_with_the_default_canary_stays_within_budget(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(_config(sim.url, None), tmp_path) as watch:
        series = _series(await _settled(watch))
        names = {name for name, _ in series}
        assert len(series) <= IDLE_BUDGET, sorted(names)
        # What alerts and dashboards read is all there: a sample of each kind of series.
        for family in ("comfyui_up", "comfyui_queue_pending", "comfyui_device_vram_free_bytes",
                       "comfyui_canary_duration_seconds_count", "comfyui_canary_runs_total",
                       "comfyui_request_duration_seconds_bucket", "comfyui_catalog_info",
                       "comfywatch_check_last_success_timestamp_seconds"):
            assert family in names, family
        # Counted from zero for the alerts that count a few of them; the rest appear when first counted.
        reasons = {labels["reason"] for name, labels in series if name == "comfyui_job_failures_total"}
        assert reasons == {"execution_error", "oom", "lost"}
        assert "comfyui_canary_failures_total" not in names
        assert "comfywatch_check_overruns_total" not in names
        assert "comfyui_job_duration_seconds_count" not in names
        timed = {labels["endpoint"] for name, labels in series if name == "comfyui_request_duration_seconds_count"}
        assert timed == {"system_stats"}


async def test_full_detail_keeps_every_counter_at_zero_and_every_latency(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(_config(sim.url, "full"), tmp_path) as watch:
        m = await _settled(watch)
        series = _series(m)
        assert len(series) > 2 * IDLE_BUDGET
        timed = {labels["endpoint"] for name, labels in series if name == "comfyui_request_duration_seconds_count"}
        assert {"system_stats", "queue", "history", "prompt", "object_info"} <= timed
        assert watch.value(m, "comfyui_canary_failures_total", canary="preview-image", reason="oom") == 0.0
        assert watch.value(m, "comfyui_request_failures_total", endpoint="queue", reason="timeout") == 0.0
        # A local server's partner nodes can fail a job for credits.
        assert watch.value(m, "comfyui_job_failures_total", reason="payment") == 0.0
        assert watch.value(m, "comfywatch_check_overruns_total", check="system") == 0.0
