"""``comfywatch diff A B`` as a real subprocess against simulated servers: exact output and exit codes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

from comfywatch.sim.admin import start_sim
from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.test_doctor import _env
from tests.fixtures import load_json
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


async def test_a_catalogue_that_is_no_json_object_is_a_failure_line_not_a_traceback() -> None:
    """``/object_info`` answering ``[]`` (JSON, but no catalogue) is the server's invalid_response: one line and
    its fix on stderr, exit 1."""

    async def not_an_object(request: web.Request) -> web.Response:
        if request.path.endswith("/system_stats"):
            return web.json_response(load_json("system_stats.json"))
        return web.json_response([])  # /object_info, and an empty /models

    app = web.Application()
    app.router.add_get("/{route:.*}", not_an_object)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with await start_sim() as sim:
            code, out, err = await diff(url, sim.url)
    finally:
        await runner.cleanup()
    assert (code, out) == (1, ""), err
    assert "Traceback" not in err, err
    assert err.startswith(f"comfywatch diff: cannot read the catalogue of {url}: invalid_response: "), err
    assert "\n  fix: " in err, err
