"""``comfywatch_check_last_success_timestamp_seconds`` moves only when a check succeeds.

A canary run that fails (the server is down, Comfy Cloud rate-limits) or skips its run (a busy queue, a
Retry-After pause) records no success: the series stays absent until a run verifies its output, so an alert
on its age fires while the canary is failing.
"""

from __future__ import annotations

from pathlib import Path

from comfywatch.sim.admin import start_sim
from tests.helpers import Metrics, eventually, running_daemon, scrape
from tests.integration.conftest import TARGET, config_toml, target_toml
from tests.integration.test_cloud import ENV, KEY, T, cloud_config

LAST_SUCCESS = "comfywatch_check_last_success_timestamp_seconds"
CANARY = "preview-image"


def _canary(metrics: Metrics, name: str, target: str = TARGET, **labels: str) -> float | None:
    return metrics.value(name, target=target, canary=CANARY, **labels)


async def test_a_failing_canary_records_no_success_until_it_succeeds(tmp_path: Path) -> None:
    """ComfyUI down: the canary fails with reason connect on every run and its check never counts as a
    success; once the server is back, the first verified run sets the timestamp."""
    async with await start_sim(faults=["down"]) as sim:
        config = config_toml(target_toml(TARGET, sim.url, canary="1s", canary_timeout="1s"))
        async with running_daemon(config, tmp_path) as (_daemon, base):
            url = f"{base}/metrics"
            m = await eventually(lambda: scrape(url),
                                 lambda m: (_canary(m, "comfyui_canary_failures_total", reason="connect") or 0) >= 2,
                                 what="two failed canary runs")
            assert _canary(m, "comfyui_canary_success") == 0.0
            assert m.value(LAST_SUCCESS, target=TARGET, check="canary") is None, m.text
            await sim.set_faults([])
            m = await eventually(lambda: scrape(url), lambda m: _canary(m, "comfyui_canary_success") == 1.0,
                                 what="a successful canary run")
            assert m.value(LAST_SUCCESS, target=TARGET, check="canary") is not None, m.text


async def test_a_canary_skipped_behind_a_busy_queue_records_no_success(tmp_path: Path) -> None:
    """A queue that never drains (the worker is dead): every canary run is skipped, none is a success."""
    async with await start_sim(faults=["worker_dead"]) as sim:
        await sim.submit(job_ms=5)
        config = config_toml(target_toml(TARGET, sim.url, canary="1s", canary_timeout="1s"))
        async with running_daemon(config, tmp_path) as (_daemon, base):
            url = f"{base}/metrics"
            m = await eventually(lambda: scrape(url),
                                 lambda m: (_canary(m, "comfyui_canary_skipped_total") or 0) >= 2,
                                 what="two skipped canary runs")
            assert _canary(m, "comfyui_canary_runs_total") == 0
            assert m.value(LAST_SUCCESS, target=TARGET, check="canary") is None, m.text


async def test_a_rate_limited_cloud_canary_records_no_success(tmp_path: Path) -> None:
    """Comfy Cloud answers 429: the canary fails (rate_limited) or is skipped during the pause; neither is a
    success."""
    async with await start_sim(cloud=True, cloud_api_keys=[KEY], faults=["http_429_rate"]) as sim:
        canary = 'enabled = true\n  interval = "1s"\n  timeout = "5s"\n  max_runs_per_day = 1000'
        async with running_daemon(cloud_config(sim.url, tmp_path, canary=canary), tmp_path, ENV) as (_daemon, base):
            url = f"{base}/metrics"

            def tried_twice(m: Metrics) -> bool:
                runs = _canary(m, "comfyui_canary_runs_total", target=T) or 0
                return runs >= 1 and runs + (_canary(m, "comfyui_canary_skipped_total", target=T) or 0) >= 3

            m = await eventually(lambda: scrape(url), tried_twice, what="canary runs failed or skipped")
            assert _canary(m, "comfyui_canary_success", target=T) == 0.0
            assert m.value(LAST_SUCCESS, target=T, check="canary") is None, m.text
