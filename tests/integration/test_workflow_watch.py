"""Workflow watch: the daemon lints each watched workflow against every matching target's live catalogue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from comfywatch.sim.admin import start_sim
from tests.fixtures import FIXTURES
from tests.helpers import Metrics, eventually, running_daemon, scrape
from tests.integration.conftest import config_toml, target_toml

WORKFLOWS = FIXTURES / "workflows"


def _watched(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name in ("canary_preview_image.json", "txt2img_missing_checkpoint.json"):
        (folder / name).write_bytes((WORKFLOWS / name).read_bytes())
    (folder / "editor.json").write_text('{"nodes": [], "links": [], "version": 0.4}', encoding="utf-8")
    return folder


async def test_each_workflow_is_valid_or_counts_its_problems_by_comfyui_error_type(tmp_path: Path) -> None:
    """Two targets, one directory watched on the pool "sdxl" only: its workflows are exported per target
    (valid 1 / 0, problems by ComfyUI's error type); the target outside the pool gets none."""
    folder = _watched(tmp_path)
    async with await start_sim(targets=2) as sim:
        pooled = target_toml("a", sim.target_url(0)) + '  [targets.labels]\n  pool = "sdxl"\n'
        config = config_toml(pooled, target_toml("b", sim.target_url(1)))
        config += f'\n[[workflows]]\npath = "{folder}"\npool = "sdxl"\n'
        async with running_daemon(config, tmp_path) as (_daemon, base):
            m = await eventually(lambda: scrape(f"{base}/metrics"),
                                 lambda m: m.value("comfyui_workflow_valid", target="a", workflow="editor") is not None,
                                 what="the watched workflows linted")
            valid = {w: m.value("comfyui_workflow_valid", target="a", pool="sdxl", workflow=w)
                     for w in ("canary_preview_image", "txt2img_missing_checkpoint", "editor")}
            assert valid == {"canary_preview_image": 1.0, "txt2img_missing_checkpoint": 0.0, "editor": 0.0}, m.text
            assert m.value("comfyui_workflow_problems", target="a", workflow="txt2img_missing_checkpoint",
                           type="value_not_in_list") == 1.0, m.text
            assert m.value("comfyui_workflow_problems", target="a", workflow="editor", type="ui_format") == 1.0
            assert m.value("comfyui_workflow_problems", target="a", workflow="canary_preview_image") is None
            assert "comfyui_workflow_valid{target=\"b\"" not in m.text, m.text


async def test_a_deploy_that_removes_a_node_breaks_the_workflow_on_that_server_only(tmp_path: Path) -> None:
    """A restart that brings a catalogue without PreviewImage (a deploy gone wrong) is seen at once: the
    monitoring WebSocket reconnects, the catalogue is read again, and the workflow using that node turns invalid
    on that server only, with ComfyUI's missing-class error type."""
    folder = _watched(tmp_path)
    async with await start_sim(targets=2) as sim:
        config = config_toml(target_toml("a", sim.target_url(0)), target_toml("b", sim.target_url(1)))
        config += f'\n[[workflows]]\npath = "{folder / "canary_preview_image.json"}"\n'
        async with running_daemon(config, tmp_path) as (_daemon, base):

            def valid(target: str) -> Callable[[Metrics], bool]:
                return lambda m: m.value("comfyui_workflow_valid", target=target,
                                         workflow="canary_preview_image") == 1.0

            await eventually(lambda: scrape(f"{base}/metrics"), lambda m: valid("a")(m) and valid("b")(m),
                             what="the workflow valid on both servers")
            await sim.deploy(0, remove=["PreviewImage"])
            await sim.restart(0)
            m = await eventually(
                lambda: scrape(f"{base}/metrics"),
                lambda m: m.value("comfyui_workflow_valid", target="a", workflow="canary_preview_image") == 0.0,
                what="the workflow broken on the redeployed server")
            assert m.value("comfyui_workflow_problems", target="a", workflow="canary_preview_image",
                           type="invalid_prompt") == 1.0, m.text
            assert valid("b")(m), m.text


async def test_a_new_version_is_read_at_once_without_the_monitor(tmp_path: Path) -> None:
    """Without the monitoring WebSocket, a poll that reports another ComfyUI version reads the catalogue at once
    (the check's own wake-up is minutes away): a deploy that removed PreviewImage breaks the workflow within
    seconds."""
    folder = _watched(tmp_path)
    async with await start_sim(targets=1) as sim:
        config = config_toml(target_toml("a", sim.target_url(0)), monitor=False)
        config += f'\n[[workflows]]\npath = "{folder / "canary_preview_image.json"}"\n'
        async with running_daemon(config, tmp_path) as (_daemon, base):

            def valid(value: float) -> Callable[[Metrics], bool]:
                return lambda m: m.value("comfyui_workflow_valid", target="a", workflow="canary_preview_image") == value

            await eventually(lambda: scrape(f"{base}/metrics"), valid(1.0), what="the workflow valid")
            await sim.deploy(0, remove=["PreviewImage"])
            sim.cluster.system_stats["system"]["comfyui_version"] = "0.3.65"
            await eventually(lambda: scrape(f"{base}/metrics"), valid(0.0), timeout=15,
                             what="the workflow broken after the version changed")
