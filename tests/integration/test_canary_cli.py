"""``comfywatch canary`` as a real subprocess against the simulated ComfyUI served by this test's loop.

The simulator runs in-process; the CLI is a separate Python process talking to it over loopback, exactly
as a user would run it next to their server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from comfywatch.errors import HINTS, Reason
from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.state import CANARY_PHASES
from tests.conftest import TIMEOUT_FACTOR
from tests.integration.test_canary import WORKFLOWS, canary_history
from tests.ports import closed_port

REPO = Path(__file__).resolve().parents[2]
PHASE_LINE = re.compile(r"^  (submit|queue|execute|fetch|total)\s+\d+\.\d ms$")


async def cli(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run ``python -m comfywatch canary ARGS``; returns (exit code, stdout, stderr)."""
    # COMFYWATCH_* variables override configuration: the developer's environment must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYWATCH_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfywatch", "canary", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout * TIMEOUT_FACTOR)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_clean(sim: SimHandle) -> None:
    state = sim.state()
    assert canary_history(sim) == []
    assert (state["output_files"], state["output_writes"]) == ([], 0)


async def test_success_prints_the_phase_table_or_json_and_exits_0() -> None:
    """--url runs one canary: a table with one line per phase in ms, or --json with seconds; exit 0."""
    async with await start_sim() as sim:
        (code, out, err), (json_code, json_out, json_err) = await asyncio.gather(
            cli("--url", sim.url, "--timeout", "10"),
            cli("--url", sim.url, "--workflow", "builtin:echo-text", "--json"),
        )
        assert code == 0, out + err
        lines = out.splitlines()
        assert lines[0] == "canary preview-image: ok"
        phases = [m.group(1) for m in map(PHASE_LINE.match, lines) if m]
        assert phases == list(CANARY_PHASES)
        assert any(line.startswith("  server ") and "server's clock" in line for line in lines)
        assert "websocket" not in out  # the WebSocket path worked
        assert err == ""  # nothing to warn about, and no debug chatter

        assert json_code == 0, json_out + json_err
        result = json.loads(json_out)  # stdout is the JSON document and nothing else
        assert (result["canary"], result["ok"], result["reason"], result["websocket_ok"]) == (
            "echo-text", True, None, True)
        assert set(result["phases"]) == set(CANARY_PHASES)
        assert all(0 <= value < 10 for value in result["phases"].values())
        assert result["server_seconds"] is not None
        assert sim.state()["jobs_succeeded"] == 2
        assert_clean(sim)


async def test_failure_exits_1_with_reason_and_hint() -> None:
    """A job failing with CUDA OOM exits 1 and prints the reason, the detail and the remediation hint."""
    async with await start_sim(faults=["oom"]) as sim:
        code, out, _ = await cli("--url", sim.url)
        assert code == 1
        lines = out.splitlines()
        assert lines[0] == "canary preview-image: FAILED (oom)"
        assert "  detail: EmptyImage: torch.OutOfMemoryError" in lines
        assert f"  fix: {HINTS[Reason.OOM]}" in out
        assert_clean(sim)


async def test_nothing_listening_exits_1_with_connect() -> None:
    """No server on the port: exit 1 with reason connect."""
    code, out, _ = await cli("--url", f"http://127.0.0.1:{closed_port()}", "--json")
    assert code == 1
    result = json.loads(out)
    assert (result["ok"], result["reason"]) == (False, "connect")


async def test_validation_failure_lists_node_errors() -> None:
    """A workflow failing validation exits 1 with reason validation and one summary line per node."""
    async with await start_sim() as sim:
        workflow = str(WORKFLOWS / "invalid_inputs.json")
        code, out, err = await cli("--url", sim.url, "--workflow", workflow)
        assert code == 1
        lines = out.splitlines()
        assert lines[0] == "canary invalid_inputs: FAILED (validation)"
        node_lines = [line for line in lines if line.startswith("  - ")]
        assert len(node_lines) == 1
        assert node_lines[0].startswith("  - node 1 (EmptyImage): value_smaller_than_min: width")
        assert "value_bigger_than_max: color" in node_lines[0]
        assert f"  fix: {HINTS[Reason.VALIDATION]}" in out
        assert "canary_rejected" in err and "node 1 (EmptyImage)" in err  # the per-node summary is logged
        assert sim.state()["jobs_submitted"] == 0


async def test_websocket_unavailable_still_succeeds_by_polling() -> None:
    """Behind a proxy that drops Upgrade the canary polls /history, succeeds and says the WebSocket is broken."""
    async with await start_sim(faults=["ws_no_upgrade"]) as sim:
        (code, out, err), (json_code, json_out, json_err) = await asyncio.gather(
            cli("--url", sim.url), cli("--url", sim.url, "--json"))
        assert code == 0, out + err
        assert out.splitlines()[0] == "canary preview-image: ok"
        assert "  websocket: unavailable, fell back to polling /history" in out.splitlines()
        assert "canary_websocket_unavailable" in err  # the warning is logged, on stderr
        assert json_code == 0, json_out + json_err
        result = json.loads(json_out)
        assert (result["ok"], result["websocket_ok"]) == (True, False)
        assert_clean(sim)


async def test_user_workflows_and_verify_from_the_config(tmp_path: Path) -> None:
    """User canary files with placeholders, checked by [targets.canary.verify]: exit 0 when met, 1 when not."""
    async with await start_sim() as sim:
        text, image = WORKFLOWS / "placeholders_text.json", WORKFLOWS / "image_32x24.json"
        config = tmp_path / "comfywatch.toml"
        config.write_text(f"""
[[targets]]
name = "text"
url = "{sim.url}"
  [targets.canary]
  workflow = '{text}'
  [targets.canary.verify]
  text_matches = '^uuid=[0-9a-f]{{32}} seed=\\d+ ts=\\d{{13}}$'

[[targets]]
name = "one-image"
url = "{sim.url}"
  [targets.canary]
  workflow = '{image}'
  name = "image"
  [targets.canary.verify]
  images = 1

[[targets]]
name = "two-images"
url = "{sim.url}"
  [targets.canary]
  workflow = '{image}'
  [targets.canary.verify]
  images = 2
""", encoding="utf-8")
        runs = await asyncio.gather(*(cli("--config", str(config), "--target", name)
                                      for name in ("text", "one-image", "two-images")))
        (text_code, text_out, text_err), (one_code, one_out, _), (two_code, two_out, _) = runs
        assert text_code == 0, text_out + text_err
        assert text_out.splitlines()[0] == "canary placeholders_text: ok"
        assert one_code == 0 and one_out.splitlines()[0] == "canary image: ok"
        assert two_code == 1
        assert two_out.splitlines()[0] == "canary image_32x24: FAILED (output_invalid)"
        assert "  detail: expected 2 images, got 1" in two_out.splitlines()
        assert sim.state()["jobs_succeeded"] == 3
        assert_clean(sim)


async def test_unusable_workflow_files_exit_2() -> None:
    """A UI-format export or a missing file is a usage error (exit 2) that says what to do; nothing is sent."""
    async with await start_sim() as sim:
        (ui_code, _, ui_err), (missing_code, _, missing_err) = await asyncio.gather(
            cli("--url", sim.url, "--workflow", str(WORKFLOWS / "ui_format.json")),
            cli("--url", sim.url, "--workflow", str(WORKFLOWS / "does-not-exist.json")),
        )
        assert ui_code == 2 and "Save (API Format)" in ui_err
        assert missing_code == 2 and "cannot read" in missing_err
        assert sim.state()["jobs_submitted"] == 0
