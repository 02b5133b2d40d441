"""Fleet drift: each local target's catalogue as counts and fingerprints; a deploy that reaches one member of
a pool shows as a fingerprint the others do not share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfywatch.checks import catalog as catalog_check
from comfywatch.parse.catalog import catalog_from
from comfywatch.sim.admin import start_sim
from tests.helpers import Metrics, eventually, running_daemon, scrape
from tests.integration.conftest import config_toml, target_toml


def _pooled(name: str, url: str) -> str:
    return target_toml(name, url) + '  [targets.labels]\n  pool = "sdxl"\n'


def _hashes(m: Metrics, target: str) -> tuple[str, str] | None:
    for line in m.text.splitlines():
        if line.startswith("comfyui_catalog_info{") and f'target="{target}"' in line:
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            return labels["nodes_hash"].strip('"'), labels["models_hash"].strip('"')
    return None


async def test_identical_members_share_fingerprints_until_one_is_redeployed(tmp_path: Path) -> None:
    async with await start_sim(targets=2) as sim:
        config = config_toml(_pooled("a", sim.target_url(0)), _pooled("b", sim.target_url(1)))
        async with running_daemon(config, tmp_path) as (_daemon, base):
            m = await eventually(lambda: scrape(f"{base}/metrics"),
                                 lambda m: _hashes(m, "a") is not None and _hashes(m, "b") is not None,
                                 what="both catalogues read")
            assert _hashes(m, "a") == _hashes(m, "b"), m.text
            classes = m.value("comfyui_node_classes", target="a", pool="sdxl")
            assert classes is not None and classes > 5, m.text
            assert m.value("comfyui_custom_node_packs", target="a") == 1.0  # websocket_image_save
            assert m.value("comfyui_models", target="a", folder="checkpoints") is None  # empty: no series
            before = _hashes(m, "a")
            assert before is not None

            await sim.deploy(1, remove=["ImageScale"], models={"checkpoints": ["sdxl_base.safetensors"]})
            await sim.restart(1)
            m = await eventually(lambda: scrape(f"{base}/metrics"), lambda m: _hashes(m, "b") != before,
                                 what="the redeployed member's new fingerprints")
            after = _hashes(m, "b")
            assert after is not None and after[0] != before[0] and after[1] != before[1], m.text
            assert _hashes(m, "a") == before
            assert m.value("comfyui_models", target="b", folder="checkpoints") == 1.0
            assert m.value("comfyui_models", target="a", folder="checkpoints") is None
            assert m.value("comfyui_node_classes", target="b") == classes - 1


async def test_a_pool_parses_one_catalogue_for_identical_members(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Three members serving the same /object_info and model lists: the daemon decodes and parses that catalogue
    once and gives all three its counts and fingerprints; a member redeployed differently is parsed anew."""
    parsed: list[int] = []

    def counting(object_info: object, models: Any, stats: Any) -> Any:
        parsed.append(1)
        return catalog_from(object_info, models, stats)

    monkeypatch.setattr(catalog_check, "catalog_from", counting)
    async with await start_sim(targets=3) as sim:
        config = config_toml(*(_pooled(name, sim.target_url(index)) for index, name in enumerate("abc")))
        async with running_daemon(config, tmp_path) as (_daemon, base):
            m = await eventually(lambda: scrape(f"{base}/metrics"),
                                 lambda m: all(_hashes(m, name) is not None for name in "abc"),
                                 what="three catalogues read")
            assert _hashes(m, "a") == _hashes(m, "b") == _hashes(m, "c"), m.text
            assert m.value("comfyui_node_classes", target="c") == m.value("comfyui_node_classes", target="a")
            assert len(parsed) == 1

            before = _hashes(m, "c")
            await sim.deploy(2, remove=["ImageScale"])
            await sim.restart(2)
            m = await eventually(lambda: scrape(f"{base}/metrics"), lambda m: _hashes(m, "c") != before,
                                 what="the redeployed member's new fingerprint")
            assert len(parsed) == 2
            assert _hashes(m, "a") == before
