"""docs/simulator.md stays true: its tables name every fault and admin route, its curl commands work as written.

The curl commands addressed to the simulators (the admin API examples and the walkthrough's fault switches) run
in document order against two real ``comfywatch simulate`` processes started with the documented options, on
ephemeral ports substituted for the documented ones. Where the document shows the answers, each answer must
match (prompt ids aside; ``…`` stands for the part left out). The walkthrough's config files must load in
``promtool`` and ``comfywatch check-config``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from comfywatch.sim.admin import cloud_faults, create_admin_app
from comfywatch.sim.faults import Fault
from tests.e2e.procs import simulate
from tests.e2e.promstack import PROMTOOL_BINARIES, require_binary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "simulator.md"
LOCAL_URL, LOCAL_ADMIN = "http://127.0.0.1:18188", "http://127.0.0.1:18189"
CLOUD_URL, CLOUD_ADMIN = "http://127.0.0.1:18288", "http://127.0.0.1:18289"
REHEARSAL_DIR = "/tmp/rehearse"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Block:
    """One ``sh`` code block, and the ``json`` block right after it (the answers it shows), if any."""

    commands: list[str]
    answers: list[str] | None


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _section(heading: str) -> str:
    """From ``heading`` to the next heading of the same or a higher level."""
    text = _doc()
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    level = len(heading.split(" ", 1)[0])
    end = re.search(rf"^#{{1,{level}}} ", text[start:], re.MULTILINE)
    return text[start : start + end.start() if end else len(text)]


def _blocks() -> list[Block]:
    found = re.finditer(r"```sh\n(.*?)```\n(?:```json\n(.*?)```\n)?", _doc(), re.DOTALL)
    return [
        Block(
            commands=match.group(1).replace("\\\n", " ").splitlines(),
            answers=match.group(2).splitlines() if match.group(2) else None,
        )
        for match in found
    ]


def _simulator_options(port: str) -> list[str]:
    """The documented ``comfywatch simulate`` options of the server on ``port``, minus the ports."""
    for block in _blocks():
        for command in block.commands:
            words = shlex.split(command, comments=True)
            if words[:2] == [".venv/bin/comfywatch", "simulate"] and f"--port {port}" in command:
                options = words[2:]
                for flag in ("--port", "--admin-port"):
                    index = options.index(flag)
                    del options[index : index + 2]
                return options
    raise AssertionError(f"docs/simulator.md starts no simulator on port {port}")


def _matches(shown: str, answer: str) -> bool:
    """Whether a shown answer (``…`` marking omissions) matches the real one, prompt ids aside."""
    answer = _UUID.sub("<uuid>", answer)
    position = 0
    for fragment in _UUID.sub("<uuid>", shown).split("…"):
        fragment = fragment.strip(" ,")
        found = answer.find(fragment, position)
        if found == -1:
            return False
        position = found + len(fragment)
    return True


def _expected_faults(command: str, cloud: bool) -> list[str] | None:
    """What ``POST /_sim/faults`` must answer in ``faults``; ``None`` when the body names an unknown fault."""
    words = shlex.split(command)
    wanted: list[str] = json.loads(words[words.index("-d") + 1])["faults"]
    valid = cloud_faults() if cloud else {fault.value for fault in Fault}
    if not set(wanted) <= set(valid):
        return None
    left_out = {Fault.DOWN.value} if cloud else {Fault.RESTART.value}
    return sorted(set(wanted) - left_out)


def _check_answer(command: str, answer: dict[str, Any]) -> None:
    if "/_sim/faults" in command and " -d " in command:
        expected = _expected_faults(command, cloud=CLOUD_ADMIN in command)
        if expected is None:
            assert set(answer) == {"error"}, answer
        else:
            assert answer["faults"] == expected, (command, answer)


def test_fault_tables_name_every_fault() -> None:
    """Each fault of both catalogues has a row in its table, and no row names a fault that does not exist."""
    for heading, names in (
        ("### Local ComfyUI faults", {fault.value for fault in Fault}),
        ("### Comfy Cloud faults", set(cloud_faults())),
    ):
        rows = set(re.findall(r"^\| `(\w+)` \|", _section(heading), re.MULTILINE))
        assert rows == names, heading


def test_admin_section_names_every_route() -> None:
    """Every route of the admin app is in the route table."""
    section = _section("## The admin API")
    for route in create_admin_app().router.routes():
        assert route.resource is not None
        if route.method != "HEAD":
            assert f"| `{route.method} {route.resource.canonical}` |" in section, route


def _localize(text: str, live: dict[str, str]) -> str:
    """``text`` with the documented simulator URLs replaced by the live ones."""
    for documented, actual in live.items():
        text = text.replace(documented, actual)
    return text


def _run(block: Block, live: dict[str, str]) -> list[str]:
    """Run the block's curl commands addressed to a simulator, on the live URLs; return their answers."""
    answers = []
    for command in block.commands:
        if not command.startswith("curl ") or not any(url in command for url in live):
            continue
        result = subprocess.run(
            ["bash", "-c", _localize(command, live)], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, (command, result.stderr)
        _check_answer(command, json.loads(result.stdout))
        answers.append(result.stdout.strip())
    return answers


def test_documented_curl_commands_work_as_written(tmp_path: Path) -> None:
    """Every curl to the simulators in the document answers JSON, switches the faults it names, and matches the
    answer the document shows."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    with (
        simulate(tmp_path, *_simulator_options("18188")) as local,
        simulate(tmp_path, *_simulator_options("18288")) as cloud,
    ):
        assert local.admin_url is not None and cloud.admin_url is not None
        live = {LOCAL_URL: local.url, LOCAL_ADMIN: local.admin_url, CLOUD_URL: cloud.url, CLOUD_ADMIN: cloud.admin_url}
        ran = 0
        for block in _blocks():
            answers = _run(block, live)
            ran += len(answers)
            if block.answers is None or len(answers) != len(block.answers):
                continue
            for shown, answer in zip((_localize(line, live) for line in block.answers), answers, strict=True):
                assert _matches(shown, answer), f"the doc shows\n{shown}\nbut the simulator answered\n{answer}"
        assert ran >= 20


def test_walkthrough_config_files_load(tmp_path: Path) -> None:
    """The comfywatch and Prometheus configs the walkthrough writes pass check-config and promtool (rules included)."""
    promtool = require_binary(*PROMTOOL_BINARIES)
    written = re.findall(rf"cat > {REHEARSAL_DIR}/(\S+) <<('?)EOT\2\n(.*?)\nEOT\n", _doc(), re.DOTALL)
    files = {name: body.replace("$PWD", str(ROOT)) if not quoted else body for name, quoted, body in written}
    assert set(files) == {"comfywatch.toml", "prometheus.yml"}
    for name, body in files.items():
        (tmp_path / name).write_text(body + "\n", encoding="utf-8")
    check = subprocess.run(
        [sys.executable, "-m", "comfywatch", "check-config", str(tmp_path / "comfywatch.toml")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    prom = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert prom.returncode == 0, prom.stdout + prom.stderr
    assert "SUCCESS: 1 rule files found" in prom.stdout + prom.stderr
