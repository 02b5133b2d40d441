"""Run mixin/render.py as a user of the committed files would: a subprocess of this Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "mixin" / "render.py"


def run_render(*args: str) -> subprocess.CompletedProcess[str]:
    """``render.py ARGS`` from the repository root, its exit code and output kept for the test to judge."""
    return subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO)


def render_mixin(out: Path, config: str) -> Path:
    """Run ``render.py --out OUT --config CONFIG`` and return OUT; fails the test with render's stderr."""
    result = run_render("--out", str(out), "--config", config)
    assert result.returncode == 0, result.stderr
    return out
