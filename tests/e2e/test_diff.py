"""``comfywatch diff A B`` as a real subprocess against simulated servers: exact output and exit codes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from comfywatch.sim.admin import start_sim
from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.test_doctor import _env
from tests.ports import closed_port


async def diff(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfywatch", "diff", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60 * TIMEOUT_FACTOR)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_identical_servers_then_a_drifted_one(tmp_path: Path) -> None:
    async with await start_sim(targets=2) as sim:
        config = tmp_path / "comfywatch.toml"
        config.write_text(f'[[targets]]\nname = "gpu-1"\nurl = "{sim.target_url(0)}"\n'
                          f'[[targets]]\nname = "gpu-2"\nurl = "{sim.target_url(1)}"\n', encoding="utf-8")
        code, out, err = await diff("gpu-1", "gpu-2", "--config", str(config))
        assert (code, err) == (0, ""), (out, err)
        lines = out.splitlines()
        assert lines[0] == "gpu-1 and gpu-2 offer the same catalogue", out
        assert lines[1].startswith("13 node classes, 0 model files; nodes_hash "), out

        await sim.deploy(1, remove=["SaveImageWebsocket", "PreviewImage"],
                         options={"ImageScale": {"upscale_method": ["nearest-exact", "lanczos-v2"]}},
                         models={"checkpoints": ["sdxl_base.safetensors"], "loras": ["detail.safetensors"]})
        code, out, err = await diff(sim.target_url(0), sim.target_url(1))
        assert (code, err) == (1, ""), (out, err)
        assert out.splitlines() == [
            "custom node packs only on " + sim.target_url(0) + ":",
            "  websocket_image_save (1 classes)",
            f"node classes only on {sim.target_url(0)} (not on {sim.target_url(1)}):",
            "  PreviewImage",
            f"combo options that differ ({sim.target_url(0)} vs {sim.target_url(1)}):",
            f"  ImageScale.upscale_method: only on {sim.target_url(0)}: area, bicubic, bilinear, lanczos;"
            f" only on {sim.target_url(1)}: lanczos-v2",
            "models only on " + sim.target_url(1) + ":",
            "  checkpoints/sdxl_base.safetensors",
            "  loras/detail.safetensors",
        ], out


async def test_usage_errors_exit_2_and_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    async with await start_sim() as sim:
        code, out, err = await diff("gpu-1", sim.url)
        assert (code, out) == (2, ""), err
        assert err == "command line: no target named 'gpu-1' (give a target of --config, or a URL)\n", err
        code, out, err = await diff(sim.url, f"http://127.0.0.1:{closed_port()}")
        assert (code, out) == (1, ""), err
        assert err.startswith("comfywatch diff: cannot read the catalogue of http://127.0.0.1:"), err
        assert ": connect: " in err and "\n  fix: " in err, err
