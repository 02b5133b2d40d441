"""Node packs that fail to import, from ComfyUI's own log, as the daemon exports them."""

from __future__ import annotations

from pathlib import Path

from comfywatch.sim.admin import start_sim
from tests.helpers import eventually, running_daemon, scrape
from tests.integration.conftest import TARGET, config_toml, target_toml

FAILURES = "comfyui_custom_node_import_failures"


async def test_a_pack_that_fails_to_import_after_a_restart_is_named(tmp_path: Path) -> None:
    """The recorded log's optional audio nodes are built-in failures from the start; a deploy that breaks a
    custom pack shows it, with kind custom, as soon as the restarted server is read again."""
    async with await start_sim() as sim, running_daemon(config_toml(target_toml(TARGET, sim.url)),
                                                        tmp_path) as (_daemon, base):
        m = await eventually(lambda: scrape(f"{base}/metrics"),
                             lambda m: m.value(FAILURES, target=TARGET, pack="nodes_audio.py") is not None,
                             what="the start-up log read")
        assert m.value(FAILURES, target=TARGET, pack="nodes_audio.py", kind="builtin") == 1.0
        assert f'{FAILURES}{{target="{TARGET}",pack="broken_pack"' not in m.text
        await sim.deploy(broken={"broken_pack": "No module named 'does_not_exist_module'"})
        await sim.restart()
        m = await eventually(lambda: scrape(f"{base}/metrics"),
                             lambda m: m.value(FAILURES, target=TARGET, pack="broken_pack") is not None,
                             what="the broken pack seen after the restart")
        assert m.value(FAILURES, target=TARGET, pack="broken_pack", kind="custom") == 1.0
        assert m.value("comfyui_requests_total", target=TARGET, endpoint="logs", code="200") is not None
